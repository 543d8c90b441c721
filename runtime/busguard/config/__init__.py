"""site.toml: typed, validated, frozen configuration.

:mod:`busguard.config.params` declares and checks options; :mod:`busguard.config.site` reads a
whole site file into frozen objects.
"""
