"""preroll.bench"""
