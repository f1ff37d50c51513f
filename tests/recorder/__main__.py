from tests.recorder.cli import main

raise SystemExit(main())
