"""preroll.integrations"""
