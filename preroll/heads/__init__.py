"""preroll.heads"""
