from hotfolder.cli import main

main()
