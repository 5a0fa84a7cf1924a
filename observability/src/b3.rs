//! Zipkin's B3 propagation, for services that still speak it.
//!
//! The OpenTelemetry project deprecated its Zipkin crate (and the B3 propagator in it), so
//! Gannet carries this small one: the single `b3` header
//! (`{trace id}-{span id}-{sampled}[-{parent span id}]`) or the multiple `x-b3-*` headers.

use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt, TraceFlags, TraceState};
use opentelemetry::{Context, SpanId, TraceId};

use crate::w3c::{ascii, hex_into};

const SINGLE: &str = "b3";
const TRACE_ID: &str = "x-b3-traceid";
const SPAN_ID: &str = "x-b3-spanid";
const SAMPLED: &str = "x-b3-sampled";
const FLAGS: &str = "x-b3-flags";

/// A [`TextMapPropagator`] for B3 headers. Extraction understands both encodings; injection
/// writes the one chosen.
///
/// ```
/// use gannet_observability::{B3Propagator, Observability};
/// let suite = Observability::default().propagator(std::sync::Arc::new(B3Propagator::single_header()));
/// # let _ = suite;
/// ```
#[derive(Debug, Clone)]
pub struct B3Propagator {
    single: bool,
    fields: Vec<String>,
}

impl B3Propagator {
    /// Injects one `b3` header.
    #[must_use]
    pub fn single_header() -> Self {
        Self {
            single: true,
            fields: vec![SINGLE.to_owned()],
        }
    }

    /// Injects `x-b3-traceid`, `x-b3-spanid` and `x-b3-sampled`.
    #[must_use]
    pub fn multiple_headers() -> Self {
        Self {
            single: false,
            fields: vec![TRACE_ID.to_owned(), SPAN_ID.to_owned(), SAMPLED.to_owned()],
        }
    }
}

fn trace_id(s: &str) -> Option<TraceId> {
    // 64-bit ids are left-padded to 128 bits.
    if (s.len() == 16 || s.len() == 32) && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        TraceId::from_hex(s).ok().filter(|t| *t != TraceId::INVALID)
    } else {
        None
    }
}

fn span_id(s: &str) -> Option<SpanId> {
    if s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        SpanId::from_hex(s).ok().filter(|s| *s != SpanId::INVALID)
    } else {
        None
    }
}

fn flags(sampled: Option<&str>, debug: bool) -> Option<TraceFlags> {
    match (sampled, debug) {
        (_, true) | (Some("1" | "true" | "d"), _) => Some(TraceFlags::SAMPLED),
        (Some("0" | "false"), _) => Some(TraceFlags::default()),
        // Absent: defer to the receiver; sample, as the OpenTelemetry B3 propagators do.
        (None, _) => Some(TraceFlags::SAMPLED),
        (Some(_), _) => None,
    }
}

impl B3Propagator {
    fn extract_single(extractor: &dyn Extractor) -> Option<SpanContext> {
        let v = extractor.get(SINGLE)?.trim();
        let mut parts = v.split('-');
        let t = trace_id(parts.next()?)?;
        let s = span_id(parts.next()?)?;
        let f = flags(parts.next(), false)?;
        Some(SpanContext::new(t, s, f, true, TraceState::default()))
    }

    fn extract_multi(extractor: &dyn Extractor) -> Option<SpanContext> {
        let t = trace_id(extractor.get(TRACE_ID)?.trim())?;
        let s = span_id(extractor.get(SPAN_ID)?.trim())?;
        let debug = extractor.get(FLAGS).is_some_and(|f| f.trim() == "1");
        let f = flags(extractor.get(SAMPLED).map(str::trim), debug)?;
        Some(SpanContext::new(t, s, f, true, TraceState::default()))
    }
}

impl TextMapPropagator for B3Propagator {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let span = cx.span();
        let sc = span.span_context();
        if !sc.is_valid() {
            return;
        }
        let sampled = if sc.is_sampled() { "1" } else { "0" };
        // Hex digits written directly: `format!` with the ids' `Display` costs thousands of
        // instructions per call.
        let mut trace = [0u8; 32];
        hex_into(&mut trace, &sc.trace_id().to_bytes());
        let mut span = [0u8; 16];
        hex_into(&mut span, &sc.span_id().to_bytes());
        if self.single {
            let mut single = [0u8; 32 + 1 + 16 + 2];
            single[..32].copy_from_slice(&trace);
            single[32] = b'-';
            single[33..49].copy_from_slice(&span);
            single[49] = b'-';
            single[50] = sampled.as_bytes()[0];
            injector.set(SINGLE, ascii(&single));
        } else {
            injector.set(TRACE_ID, ascii(&trace));
            injector.set(SPAN_ID, ascii(&span));
            injector.set(SAMPLED, sampled.to_owned());
        }
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        match Self::extract_single(extractor).or_else(|| Self::extract_multi(extractor)) {
            Some(sc) => cx.with_remote_span_context(sc),
            None => cx.clone(),
        }
    }

    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(&self.fields)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn remote(cx: &Context) -> SpanContext {
        cx.span().span_context().clone()
    }

    #[test]
    fn round_trips_in_both_encodings() {
        let sc = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        let cx = Context::new().with_remote_span_context(sc.clone());
        for p in [
            B3Propagator::single_header(),
            B3Propagator::multiple_headers(),
        ] {
            let mut carrier = HashMap::new();
            p.inject_context(&cx, &mut carrier);
            // The headers as written, not only as read back.
            let header = |k: &str| carrier.get(k).map(String::as_str);
            if p.single {
                assert_eq!(
                    header(SINGLE),
                    Some("4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1")
                );
            } else {
                assert_eq!(header(TRACE_ID), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
                assert_eq!(header(SPAN_ID), Some("00f067aa0ba902b7"));
                assert_eq!(header(SAMPLED), Some("1"));
            }
            let got = remote(&p.extract(&carrier));
            assert_eq!(got.trace_id(), sc.trace_id());
            assert_eq!(got.span_id(), sc.span_id());
            assert!(got.is_sampled());
            assert!(got.is_remote());
        }
    }

    #[test]
    fn reads_64_bit_ids_unsampled_and_rejects_garbage() {
        let p = B3Propagator::single_header();
        let mut c = HashMap::new();
        c.insert(
            SINGLE.to_owned(),
            "a3ce929d0e0e4736-00f067aa0ba902b7-0".to_owned(),
        );
        let got = remote(&p.extract(&c));
        assert_eq!(
            got.trace_id(),
            TraceId::from_hex("0000000000000000a3ce929d0e0e4736").unwrap()
        );
        assert!(!got.is_sampled());
        for bad in [
            "",
            "xyz",
            "a3ce929d0e0e4736-zz",
            "0000000000000000-00f067aa0ba902b7-1",
        ] {
            let mut c = HashMap::new();
            c.insert(SINGLE.to_owned(), bad.to_owned());
            assert!(!remote(&p.extract(&c)).is_valid(), "{bad:?}");
        }
    }
}
