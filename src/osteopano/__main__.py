from osteopano.cli import main

main()
