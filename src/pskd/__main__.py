from pskd.cli import main

main()
