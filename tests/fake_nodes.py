"""The node provider of the autoscaling tests: Ray's fake multi-node provider, nodes as local processes.

Ray ships ``FakeMultiNodeProvider`` (``ray.autoscaler._private.fake_multi_node``) for exactly this: the
autoscaler launches "nodes" that are real raylets on this machine with the resources their node type
declares. Two adjustments let it serve a job as a cluster would:

* a node type may declare ``memory`` (the autoscaler needs it to place actors that reserve memory, as the
  model actors do), but a raylet takes memory as its own parameter, not as a custom resource: the
  node's raylet is started without it and reports this machine's memory;
* it is loaded as an ``external`` provider (by module path), since the wheel leaves out the defaults
  file that the ``fake_multinode`` provider type reads.
"""

from __future__ import annotations

from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider

MODULE = f"{__name__}.LocalNodeProvider"


class LocalNodeProvider(FakeMultiNodeProvider):
    def create_node_with_resources_and_labels(self, node_config, tags, count, resources, labels):
        resources = {k: v for k, v in resources.items() if k != "memory"}
        return super().create_node_with_resources_and_labels(node_config, tags, count, resources, labels)
