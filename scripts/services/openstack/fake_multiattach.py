"""Cinder's fake volume driver (``cinder.tests.fake_driver.FakeLoggingVolumeDriver``, stores no data) with its pool
reporting ``multiattach`` support, so volumes of a multiattach volume type pass the scheduler's CapabilitiesFilter.
Loaded by cinder-volume through ``volume_driver = fake_multiattach.MultiattachFakeDriver`` (PYTHONPATH)."""

from cinder.tests.fake_driver import FakeLoggingVolumeDriver


class MultiattachFakeDriver(FakeLoggingVolumeDriver):
    def _update_volume_stats(self):
        super()._update_volume_stats()
        for pool in self._stats["pools"]:
            pool["multiattach"] = True
