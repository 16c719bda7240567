"""The interface every format object has, and what the host-coded formats share.

A format is one way a chunk's codes become file bytes and back.  Encode::

    finish(rung, slot, e, p, ec, grays, kernels)  the encoder's outputs -> bits on the device
    to_host(slot, bits)                           -> a HostBits; its records() once the slot's copies are done
    serialize(coding, record, h, w, color, timer) one image's record -> its file

Decode::

    parse(hdr, coding, body, timer)               a checked container's body -> a record
    to_device(rung, slot, records, kernels)       records of one rung and shape -> (levels, bits,
                                                  cbits) decoder inputs on the slot's device, and
                                                  errors: None, or per item None / the error
                                                  found once the slot's copies are done

``host_entropy``: whether ``serialize`` is CPU entropy work (the entropy pool runs it,
in threads or worker processes); the device coder's is only its container.
``upload``: the formats whose records go to the device the same way share a name, so a
chunk of mixed files uploads each kind once (engine/runtime/stages.py).

A *slot* (engine/runtime/executors.py) is where an executor runs a chunk: its device, CUDA
stream, staging buffers and timer.  A *lane* is a rANS lane, a ``tile`` x ``tile``
rectangle of a version 2 file, coded alone.
"""
from __future__ import annotations

import torch


def bitpath(kernels: str, device):
    """The bit path (kernels/) for this choice on this device."""
    from kernels import get_bitpath
    return get_bitpath(kernels, str(device))


class HostBits:
    """A chunk's bits on their way to the host: ``records()`` once the slot's copies
    are done.  ``convert`` turns the staged buffers into each image's record."""

    def __init__(self, records: list | None = None, staged=None, convert=None):
        self._records, self._staged, self._convert = records, staged, convert

    def records(self) -> list:
        if self._records is None:
            self._records = self._convert(self._staged)
        return self._records


def _packed_records(buffers) -> list:
    from kernels.reference import packed_from_arrays
    lv, nb, y, cnbits, c = buffers
    return packed_from_arrays(lv.numpy(), nb.numpy(), y.numpy(), cnbits, c.numpy())


class HostCoded:
    """A format whose entropy coding runs on the CPU: the device's part ends with the
    bit path's Packed records (levels + packed Y / CbCr bits)."""

    coder = "native"
    host_entropy = True

    def finish(self, rung, slot, e, p, ec, grays: list, kernels: str):
        """The bit path's device buffers ``(levels, ynbits, ybuf, cnbits, cbuf)`` (Triton)
        or, for the torch bit path, Packed records already on the host."""
        cfg = rung.q.config
        with slot.stage("bitpath"):
            bp = bitpath(kernels, e.device)
            if bp.pack_device is None:
                return bp.pack(e, p, ec, cfg.n, cfg.levels)
            return bp.pack_device(e, p, ec, cfg.n, cfg.levels)

    def to_host(self, slot, bits) -> HostBits:
        """Device bits -> the slot's staging buffers, without waiting for the copies."""
        if isinstance(bits, list):      # the torch bit path packs on the host
            return HostBits(records=bits)
        lv, ynbits, ybuf, cnbits, cbuf = bits
        with slot.stage("d2h"):
            h = (slot.host("lv", lv.shape).copy_(lv, non_blocking=True),
                 slot.host("ynbits", ynbits.shape, torch.int32).copy_(ynbits, non_blocking=True),
                 slot.host("ybuf", ybuf.shape).copy_(ybuf, non_blocking=True),
                 int(cnbits),
                 slot.host("cbuf", cbuf.shape).copy_(cbuf, non_blocking=True))
        return HostBits(staged=h, convert=_packed_records)


class DenseDecoded:
    """Records that are dense uint8 arrays (levels, ydense, cdense) on the host."""

    upload = "dense"

    def to_device(self, rung, slot, decs: list, kernels: str):
        """One staging buffer per input; inline on the CPU straight into the decoder's
        float inputs."""
        dev = slot.device
        B = len(decs)
        with slot.stage("h2d"):
            if dev.type == "cpu" and slot.stream is None:
                # numpy casting on this thread: torch's .float() on its intra-op threads cost
                # ~10x that on a busy 2-core machine (#25)
                ins = [torch.empty((B, *a.shape), dtype=torch.float32) for a in decs[0]]
                for k, d in enumerate(decs):
                    for buf, a in zip(ins, d):
                        buf.numpy()[k] = a
                return ins[0][:, None], ins[1], ins[2], None
            host = [slot.host(name, (B, *a.shape)) for name, a in zip(("lv_in", "y_in", "c_in"), decs[0])]
            for k, d in enumerate(decs):
                for buf, a in zip(host, d):
                    buf.numpy()[k] = a
            lv, bits, cbits = (buf.to(dev, non_blocking=True) for buf in host)
            return lv[:, None].float(), bits.float(), cbits.float(), None
