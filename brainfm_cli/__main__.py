from brainfm_cli.cli.app import main

main()
