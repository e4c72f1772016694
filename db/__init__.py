"""Database layer: models, engine, migrations runner and the shared queries. Knows no torch."""
