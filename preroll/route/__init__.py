"""preroll.route"""
