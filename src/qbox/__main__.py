from qbox.cli.main import main

main()
