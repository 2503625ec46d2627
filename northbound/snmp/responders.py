"""Command responders that send the tree's pre-encoded varbinds, and a GETBULK that fills
responses up to the message size.

The controller (tree.py) answers with (OID, encoded varbind) pairs; `_FastSend` puts those
bytes into the response PDU as one `EncodedVarBindList` instead of letting pysnmp rebuild
pyasn1 objects per varbind (see ber.py). Error responses, which carry the request's own
varbinds, still go through pysnmp unchanged.

pysnmp's BulkCommandResponder also caps a response at 64 variable bindings whatever the
manager's max-repetitions, and a response that turns out too big for the message is silently
dropped (snmpSilentDrops), not truncated. `SizedBulkCommandResponder` keeps adding
repetitions while the (exactly known) encoded size stays under the requester's maximum
(RFC 3416 4.2.3 allows stopping early), and stops once every repeater is at endOfMibView.
"""

from __future__ import annotations

from typing import Any

from pysnmp.entity.rfc3413 import cmdrsp
from pysnmp.proto.api import v2c

from northbound.snmp import ber

# Room for the message header, security parameters (v3) and PDU fields.
HEADER_BUDGET = 512
# Past this, UDP datagrams fragment badly on real networks; managers asking for more get this.
MAX_RESPONSE = 60_000
# The variable-bindings component of a v2c PDU (request-id, error-status, error-index, vbs).
VARBINDS = 3


class _FastSend(cmdrsp.CommandResponderBase):
    def _pending(self, state_reference: Any) -> tuple[Any, ...]:
        return self._CommandResponderBase__pendingReqs[state_reference]  # type: ignore[attr-defined]

    def send_varbinds(
        self,
        snmpEngine: Any,
        stateReference: Any,
        errorStatus: Any,
        errorIndex: Any,
        varBinds: Any,
    ) -> None:
        if not varBinds or not all(isinstance(vb[1], bytes) for vb in varBinds):
            super().send_varbinds(snmpEngine, stateReference, errorStatus, errorIndex, varBinds)
            return
        pdu = self._pending(stateReference)[7]
        v2c.apiPDU.set_error_status(pdu, errorStatus)
        v2c.apiPDU.set_error_index(pdu, errorIndex)
        raw = b"".join(vb[1] for vb in varBinds)
        pdu.setComponentByPosition(VARBINDS, ber.EncodedVarBindList(raw))
        self.send_pdu(snmpEngine, stateReference, pdu)


class GetCommandResponder(_FastSend, cmdrsp.GetCommandResponder):
    pass


class NextCommandResponder(_FastSend, cmdrsp.NextCommandResponder):
    pass


class SizedBulkCommandResponder(_FastSend, cmdrsp.BulkCommandResponder):
    max_varbinds = 100_000

    def _budget(self, state_reference: Any) -> int:
        max_size = int(self._pending(state_reference)[9])
        return min(max_size, MAX_RESPONSE) - HEADER_BUDGET

    def handle_management_operation(
        self, snmpEngine: Any, stateReference: Any, contextName: Any, PDU: Any
    ) -> None:
        non_repeaters = max(int(v2c.apiBulkPDU.get_non_repeaters(PDU)), 0)
        max_repetitions = max(int(v2c.apiBulkPDU.get_max_repetitions(PDU)), 0)
        req = v2c.apiPDU.get_varbinds(PDU)
        n = min(non_repeaters, len(req))
        r = max(len(req) - n, 0)
        m = min(max_repetitions, self.max_varbinds // r) if r else 0
        read_next = self.snmpContext.get_mib_instrum(contextName).read_next_variables
        context = dict(snmpEngine=snmpEngine, acFun=self.verify_access, cbCtx=self.cbCtx)
        budget = self._budget(stateReference)

        instrum = self.snmpContext.get_mib_instrum(contextName)
        if r == 1 and not n and hasattr(instrum, "read_next_run"):
            # A table walk: one run of cells (see TreeController.read_next_run).
            out = instrum.read_next_run(req[0][0], m, budget, **context) if m else []
            self.send_varbinds(snmpEngine, stateReference, 0, 0, out)
            self.release_state_information(stateReference)
            return

        out = list(read_next(*req[:n], **context)) if n else []
        size = sum(len(vb[1]) for vb in out)
        var_binds = req[n:]
        while m and r:
            batch = read_next(*var_binds, **context)
            batch_size = sum(len(vb[1]) for vb in batch)
            if out and size + batch_size > budget:
                break
            out.extend(batch)
            size += batch_size
            if all(isinstance(vb[1], ber.EndOfView) for vb in batch):
                break
            var_binds = batch
            m -= 1
        # max-repetitions 0 and no non-repeaters: an empty list is the answer (RFC 3416
        # 4.2.3), not an error.
        self.send_varbinds(snmpEngine, stateReference, 0, 0, out)
        self.release_state_information(stateReference)
