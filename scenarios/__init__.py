"""The scenarios shipped with mdiqkd, as package data.

Each ``*.yaml`` file here is a scenario that ``mdiqkd run NAME`` finds by its name (the file name
without ``.yaml``); ``orchestration.config.shipped_scenarios`` lists them through
``importlib.resources``, so they are found from an installed wheel as well as from a checkout.
A file with a top-level ``links:`` is a network of several links (``network_metro.yaml``;
``orchestration.network.shipped_networks`` lists those, ``shipped_scenarios`` leaves them out).
"""
