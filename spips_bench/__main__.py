from spips_bench.cli import main

raise SystemExit(main())
