"""ClickHouse: the client the pipeline writes through, migrations, and finance views."""
