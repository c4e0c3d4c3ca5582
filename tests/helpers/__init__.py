"""Helpers the tests share: tiny real studies, constructed run folders, processes, models. Import them as
`from helpers.x import ...` (pytest puts tests/ on sys.path)."""
