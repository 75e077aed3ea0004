from alysd.daemon import main

main()
