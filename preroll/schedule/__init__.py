"""preroll.schedule"""
