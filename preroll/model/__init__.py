"""preroll.model"""
