from meter.cli import main

raise SystemExit(main())
