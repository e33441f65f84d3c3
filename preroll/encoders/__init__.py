"""preroll.encoders"""
