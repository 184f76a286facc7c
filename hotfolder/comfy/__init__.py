"""ComfyUI client: ``http`` (requests, the only module importing it), ``ws`` (websocket-client, the only
module importing it) and ``client`` (one :class:`~hotfolder.comfy.client.ComfyClient` per server, which
routes WebSocket messages by ``prompt_id`` and never trusts the WebSocket alone)."""
