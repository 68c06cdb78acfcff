from callctl.cli import main

raise SystemExit(main())
