"""DuckDB SQL files (macros and views), installed as package data so the ETL can load them."""
