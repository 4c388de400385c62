from xshathra.cli import main

main()
