"""The fake Kubernetes API lives in testkit/fake_kube.py, so that the snapshot benchmark
(benchmarks/snapshot_cut.py) runs against the same fake as the tests; the tests keep importing it from here."""

from testkit.fake_kube import FakeKubeApi, merge_patch

__all__ = ["FakeKubeApi", "merge_patch"]
