//! The right to forward one request.

use mandate_core::MissionId;

/// The right to forward exactly `T`, the request that was decided.
///
/// Made only by this crate's pipeline ([`crate::Enforcer::decide`]), only
/// for an Allow whose unit of budget (and grant use) was counted in the
/// transaction that made its decision durable. It holds the decided
/// request itself, so a forwarder that takes a `Permit<T>` can send only
/// what was decided; it is neither `Clone` nor constructible elsewhere, so
/// one decision forwards one request.
///
/// Forwarding without a permit does not compile:
///
/// ```compile_fail
/// # use mandate_enforce::Permit;
/// fn forward(_: Permit<&str>) {}
/// // No constructor outside the pipeline: the fields are private.
/// forward(Permit { request: "GET /gw/billing/invoices", seq: 1, mission: todo!() });
/// ```
///
/// ```compile_fail
/// # use mandate_enforce::Permit;
/// fn forward(_: Permit<&str>) {}
/// fn twice(p: Permit<&str>) {
///     // One permit, one request: it is not `Clone`.
///     forward(p.clone());
///     forward(p);
/// }
/// ```
#[derive(Debug)]
#[must_use = "a permit is the right to forward; dropping it forwards nothing"]
pub struct Permit<T> {
    request: T,
    /// The sequence number of the decision's durable audit record.
    seq: u64,
    mission: MissionId,
}

impl<T> Permit<T> {
    /// INVARIANT: called only by the pipeline, after the Allow was counted
    /// and its record committed as `seq`.
    pub(crate) fn mint(request: T, seq: u64, mission: MissionId) -> Self {
        Self {
            request,
            seq,
            mission,
        }
    }

    /// The decided request, to read (a forwarder builds its upstream
    /// request from it).
    pub fn request(&self) -> &T {
        &self.request
    }

    /// The sequence number of the decision's audit record.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The mission the request was decided for.
    pub fn mission(&self) -> &MissionId {
        &self.mission
    }

    /// Spends the permit: the decided request, to send now. Call it only
    /// where the request leaves for its upstream.
    pub fn into_request(self) -> T {
        self.request
    }
}
