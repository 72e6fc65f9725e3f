"""``paycore demo``: ``run`` (the options, the wallet workload, the report) and its acts,
``cross_shard_act`` and ``payments_act``; ``asgi_client`` and ``promises`` are what the
acts share."""
