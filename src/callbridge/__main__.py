from callbridge.cli.main import main

raise SystemExit(main())
