"""A stand-in PACS for the demo when Orthanc is not installed: a pynetdicom storage SCP writing to a folder.

It receives what the nodes write back (approved SEGs) and "routes" studies to a node by C-STORE with the
node's own SCU (:func:`dicom_node.work.export.send_objects`), as a PACS auto-routing rule would.
"""

from __future__ import annotations

import logging
import socket
import threading
from pathlib import Path
from typing import Any, cast

from dicom_node.core.config import Peer
from dicom_node.intake.scp import VERIFICATION
from dicom_node.work.export import describe, send_objects

logger = logging.getLogger(__name__)


class StandInPacs:
    """Storage SCP on loopback that keeps every received object in ``folder``."""

    def __init__(self, ae_title: str, port: int, folder: Path) -> None:
        self.ae_title = ae_title
        self.port = port
        self.folder = folder
        self.received: list[tuple[str, str, Path]] = []  # (calling AE, Modality, path)
        self._lock = threading.Lock()
        self._server: Any = None

    def start(self) -> StandInPacs:
        """Serve C-ECHO and C-STORE of every storage SOP class."""
        from pynetdicom import AE, AllStoragePresentationContexts, evt

        self.folder.mkdir(parents=True, exist_ok=True)
        ae = AE(ae_title=self.ae_title)
        ae.supported_contexts = AllStoragePresentationContexts
        ae.add_supported_context(VERIFICATION)
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_CONN_OPEN, self._nodelay)]
        self._server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=cast(Any, handlers))
        return self

    @staticmethod
    def _nodelay(event: Any) -> None:
        event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _on_store(self, event: Any) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        path = self.folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        with self._lock:
            self.received.append((event.assoc.requestor.ae_title, str(ds.get("Modality", "")), path))
        return 0x0000

    def send(self, files: list[Path], node_ae: str, node_port: int) -> None:
        """Route files to a node (C-STORE, every status checked)."""
        peer = Peer(name="node", ae_title=node_ae, host="127.0.0.1", port=node_port)
        report = send_objects(self.ae_title, peer, [describe(f) for f in files])
        if not report.ok:
            raise RuntimeError(f"the node refused some instances: {report.statuses}")

    def seg_from(self, ae_title: str) -> str | None:
        """A line about the SEG received from ``ae_title``, if any."""
        with self._lock:
            for calling, modality, path in self.received:
                if calling == ae_title and modality == "SEG":
                    return f"SEG {path.name}"
        return None

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
