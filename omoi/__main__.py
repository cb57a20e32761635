from omoi.cli import main

main()
