from charterm.cli import main

main()
