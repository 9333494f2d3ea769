from retail.cli import main

main()
