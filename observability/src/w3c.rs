//! W3C trace context (`traceparent`, `tracestate`) with injection that does not go through
//! `format!`.
//!
//! The SDK's `TraceContextPropagator` formats `traceparent` with `format!` and the ids'
//! `Display` impls: about 3,000 instructions per client call under callgrind, a seventh of
//! what a call with the whole observability suite costs; its extraction splits the header
//! into a `Vec` and parses each part with `from_str_radix` (about 2,700 per server request).
//! This propagator writes the same header from a fixed buffer, and reads a header in the
//! canonical form (`00-` + 32 + `-` + 16 + `-` + 2 lowercase hex digits) directly; anything
//! else goes to the SDK's parser, so what is accepted and how does not change.

use std::str::FromStr;

use opentelemetry::Context;
use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry_sdk::propagation::TraceContextPropagator;

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// Writes the lowercase hex digits of `bytes` into `out` (twice as long).
pub(crate) fn hex_into(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
    }
}

/// The value of the lowercase hex digits `s`, if it is nothing else and fits in 16 bytes.
fn lower_hex(s: &[u8]) -> Option<u128> {
    let mut v: u128 = 0;
    for &c in s {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | u128::from(d);
    }
    Some(v)
}

/// A `traceparent` in the canonical version-00 form, read without allocating; `None` for any
/// other form (which the SDK's parser then judges).
fn canonical(header: &str) -> Option<(TraceId, SpanId, TraceFlags)> {
    let b = header.as_bytes();
    if b.len() != 55 || &b[..3] != b"00-" || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let trace = lower_hex(&b[3..35])?;
    let span = u64::try_from(lower_hex(&b[36..52])?).ok()?;
    let flags = u8::try_from(lower_hex(&b[53..55])?).ok()?;
    Some((
        TraceId::from_bytes(trace.to_be_bytes()),
        SpanId::from_bytes(span.to_be_bytes()),
        TraceFlags::new(flags) & TraceFlags::SAMPLED,
    ))
}

/// `bytes` (ASCII: hex digits and dashes) as a `String`.
pub(crate) fn ascii(bytes: &[u8]) -> String {
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .unwrap_or_default()
}

/// W3C trace context, the same headers as `opentelemetry_sdk`'s `TraceContextPropagator`
/// (which extracts for it), written without formatting machinery. An empty `tracestate` is
/// left out rather than sent empty. The default propagator of Gannet's tracers, with W3C
/// baggage.
///
/// ```
/// use gannet_observability::{Observability, W3cTraceContext};
/// let suite = Observability::default().propagator(std::sync::Arc::new(W3cTraceContext::new()));
/// # let _ = suite;
/// ```
#[derive(Debug, Default)]
pub struct W3cTraceContext {
    sdk: TraceContextPropagator,
}

impl W3cTraceContext {
    /// The propagator.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

impl TextMapPropagator for W3cTraceContext {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let span = cx.span();
        let sc = span.span_context();
        if !sc.is_valid() {
            return;
        }
        // "00-" trace id (32) "-" span id (16) "-" flags (2)
        let mut buf = *b"00-00000000000000000000000000000000-0000000000000000-00";
        hex_into(&mut buf[3..35], &sc.trace_id().to_bytes());
        hex_into(&mut buf[36..52], &sc.span_id().to_bytes());
        hex_into(
            &mut buf[53..55],
            &[(sc.trace_flags() & TraceFlags::SAMPLED).to_u8()],
        );
        injector.set(TRACEPARENT, ascii(&buf));
        let state = sc.trace_state().header();
        if !state.is_empty() {
            injector.set(TRACESTATE, state);
        }
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        let Some((trace_id, span_id, flags)) = extractor.get(TRACEPARENT).and_then(canonical)
        else {
            return self.sdk.extract_with_context(cx, extractor);
        };
        let state = extractor
            .get(TRACESTATE)
            .and_then(|s| TraceState::from_str(s).ok())
            .unwrap_or_default();
        let sc = SpanContext::new(trace_id, span_id, flags, true, state);
        if sc.is_valid() {
            cx.with_remote_span_context(sc)
        } else {
            cx.clone()
        }
    }

    fn fields(&self) -> FieldIter<'_> {
        self.sdk.fields()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn injected(p: &dyn TextMapPropagator, sc: &SpanContext) -> HashMap<String, String> {
        let cx = Context::new().with_remote_span_context(sc.clone());
        let mut out = HashMap::new();
        p.inject_context(&cx, &mut out);
        out
    }

    fn contexts() -> Vec<SpanContext> {
        let mut out = Vec::new();
        for (i, flags) in [
            TraceFlags::SAMPLED,
            TraceFlags::default(),
            TraceFlags::new(0xff),
        ]
        .into_iter()
        .enumerate()
        {
            let seed = 0x0123_4567_89ab_cdef_u64.wrapping_mul(i as u64 + 1);
            let state = if i == 1 {
                TraceState::from_str("vendor=a1,other=b-2").expect("valid trace state")
            } else {
                TraceState::default()
            };
            out.push(SpanContext::new(
                TraceId::from_bytes(
                    (u128::from(seed) << 64 | u128::from(!seed))
                        .max(1)
                        .to_be_bytes(),
                ),
                SpanId::from_bytes(seed.max(1).to_be_bytes()),
                flags,
                true,
                state,
            ));
        }
        out
    }

    #[test]
    fn writes_what_the_sdk_writes() {
        let sdk = TraceContextPropagator::new();
        let ours = W3cTraceContext::new();
        for sc in contexts() {
            let (a, b) = (injected(&sdk, &sc), injected(&ours, &sc));
            assert_eq!(a.get(TRACEPARENT), b.get(TRACEPARENT), "{sc:?}");
            match a.get(TRACESTATE).map(String::as_str) {
                Some("") | None => assert_eq!(b.get(TRACESTATE), None, "empty state left out"),
                Some(state) => assert_eq!(b.get(TRACESTATE).map(String::as_str), Some(state)),
            }
        }
    }

    #[test]
    fn what_it_writes_extracts_to_the_same_context() {
        let ours = W3cTraceContext::new();
        for sc in contexts() {
            let headers = injected(&ours, &sc);
            let back = ours.extract_with_context(&Context::new(), &headers);
            let got = back.span().span_context().clone();
            assert_eq!(got.trace_id(), sc.trace_id());
            assert_eq!(got.span_id(), sc.span_id());
            assert_eq!(got.is_sampled(), sc.is_sampled());
            assert_eq!(got.trace_state().header(), sc.trace_state().header());
            assert!(got.is_remote());
        }
    }

    /// What a propagator extracts from `traceparent` (and `tracestate`), as comparable text.
    fn extracted(p: &dyn TextMapPropagator, parent: Option<&str>, state: Option<&str>) -> String {
        let mut headers = HashMap::new();
        if let Some(v) = parent {
            headers.insert(TRACEPARENT.to_owned(), v.to_owned());
        }
        if let Some(v) = state {
            headers.insert(TRACESTATE.to_owned(), v.to_owned());
        }
        let cx = p.extract(&headers);
        let span = cx.span();
        let sc = span.span_context();
        format!(
            "valid={} remote={} trace={} span={} flags={:?} state={:?}",
            sc.is_valid(),
            sc.is_remote(),
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags(),
            sc.trace_state().header()
        )
    }

    #[test]
    fn reads_what_the_sdk_reads() {
        let sdk = TraceContextPropagator::new();
        let ours = W3cTraceContext::new();
        let parents = [
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-ff",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-09",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-B7AD6B7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0A",
            " 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01 ",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "00-0af7651916cd43dd8448eb211c8031-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319g-b7ad6b7169203331-01",
            "00-+af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00_0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "",
            "garbage",
        ];
        for parent in parents.into_iter().map(Some).chain([None]) {
            for state in [None, Some("vendor=a1,other=b-2"), Some("not a state")] {
                assert_eq!(
                    extracted(&ours, parent, state),
                    extracted(&sdk, parent, state),
                    "traceparent {parent:?}, tracestate {state:?}"
                );
            }
        }
    }

    #[test]
    fn an_invalid_context_writes_nothing() {
        let out = injected(&W3cTraceContext::new(), &SpanContext::empty_context());
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn hex_digits_are_lowercase_pairs() {
        let mut out = [0u8; 8];
        hex_into(&mut out, &[0x00, 0x0f, 0xa0, 0xff]);
        assert_eq!(&out, b"000fa0ff");
    }
}
