//! TFTP's metric families: requests by outcome, bytes sent, packets sent
//! again, and the `[tftp] max_transfers` slots held and waited for.
//! Registered by [`Metrics::new`]; the handler counts through the methods
//! added to [`Metrics`] here.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::metrics::{Metrics, at_zero, families, label_value};

label_value! {
    /// How a TFTP request ended.
    TftpResult {
        /// The whole file was read out to the client.
        Sent => "sent",
        /// A path outside the assets directory, or a write.
        Refused => "refused",
        NotFound => "not_found",
        /// No `[tftp] max_transfers` slot came free within 30 s: "server busy".
        Busy => "busy",
        /// Refused at once: the client's address had `[tftp] max_transfers_per_address` already.
        Limited => "limited",
        /// Dropped: the client acknowledged nothing (not even the OACK) within
        /// `[tftp] first_ack_timeout`, as a spoofed or vanished one does.
        Unacknowledged => "unacknowledged",
        /// Started but not finished: the client sent an error (a size probe's
        /// refusal of the OACK included), stopped answering, or rackboot failed.
        Aborted => "aborted",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct ResultLabels {
    result: TftpResult,
}

families! {
    /// TFTP's families under `rackboot_`, one field each.
    pub(crate) struct TftpFamilies {
        tftp_transfers: Family<ResultLabels, Counter> => "TFTP requests by outcome",
        tftp_sent: Counter, Unit::Bytes => "File bytes read out to TFTP clients",
        tftp_retransmissions: Counter
            => "TFTP packets (DATA or OACK) sent again: after a timeout, or from a windowed client's early ACK",
        tftp_queued: Gauge => "TFTP transfers waiting for a free tftp.max_transfers slot",
        tftp_active: Gauge => "TFTP transfers holding a tftp.max_transfers slot",
    }
}

/// TFTP's families.
#[derive(Debug)]
pub(crate) struct TftpMetrics {
    families: TftpFamilies,
}

impl TftpMetrics {
    /// Registers TFTP's families with every series at zero.
    pub(crate) fn register(registry: &mut Registry) -> TftpMetrics {
        let f = TftpFamilies::register(registry);
        at_zero(&f.tftp_transfers, TftpResult::ALL, |result| ResultLabels {
            result,
        });
        TftpMetrics { families: f }
    }
}

impl Metrics {
    pub fn tftp_transfer(&self, result: TftpResult) {
        self.tftp
            .families
            .tftp_transfers
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn tftp_sent_bytes(&self, n: u64) {
        self.tftp.families.tftp_sent.inc_by(n);
    }

    /// `n` TFTP packets were sent again.
    pub fn tftp_retransmitted(&self, n: u64) {
        self.tftp.families.tftp_retransmissions.inc_by(n);
    }

    /// A transfer joined (+1) or left (-1) the queue for a slot.
    pub fn tftp_queued(&self, delta: i64) {
        self.tftp.families.tftp_queued.inc_by(delta);
    }

    /// A transfer took (+1) or freed (-1) a slot.
    pub fn tftp_active(&self, delta: i64) {
        self.tftp.families.tftp_active.inc_by(delta);
    }
}
