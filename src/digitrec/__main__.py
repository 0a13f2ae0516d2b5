from digitrec.cli import main

raise SystemExit(main())
