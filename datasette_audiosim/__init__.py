"""Datasette plugin for audiosim (find-similar pages, players, SQL functions): see the plugin issue."""
