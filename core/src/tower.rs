//! Adapters between Gannet's [`Service`]/[`Layer`] and `tower`'s (feature `tower`).
//!
//! A tower service sees Gannet calls as `(Context, Req)` requests answered with
//! `(Context, Resp)`, so tower middleware (timeouts, concurrency limits, `ServiceBuilder`
//! stacks) can wrap Gannet services and be used as Gannet layers.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use gannet_core::service::{service_fn, Service, Layer};
//! use gannet_core::tower::TowerLayer;
//! use gannet_core::{bytes::Bytes, Context};
//!
//! let echo = service_fn(|_, req| async move { Ok(req) });
//! // a tower layer that rewrites the request
//! let upper = tower::util::MapRequestLayer::new(|(cx, req): (Context, Bytes)| {
//!     (cx, Bytes::from(req.to_ascii_uppercase()))
//! });
//! let svc = TowerLayer::new(upper).layer(echo);
//! let out = svc.call(&mut Context::default(), Bytes::from_static(b"hi")).await.unwrap();
//! assert_eq!(&out[..], b"HI");
//! # }
//! ```

use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use futures::future::BoxFuture;
use tower::ServiceExt;

use crate::context::Context;
use crate::service::{Layer, Service};

/// A Gannet service as a `tower::Service<(Context, Req)>`.
#[derive(Debug)]
pub struct IntoTower<S> {
    inner: Arc<S>,
}

impl<S> IntoTower<S> {
    /// Wraps `service`.
    pub fn new(service: S) -> Self {
        Self {
            inner: Arc::new(service),
        }
    }
}

impl<S> Clone for IntoTower<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<S, Req> tower::Service<(Context, Req)> for IntoTower<S>
where
    S: Service<Req> + 'static,
    Req: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = (Context, S::Response);
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (mut cx, req): (Context, Req)) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move {
            let resp = inner.call(&mut cx, req).await?;
            Ok((cx, resp))
        })
    }
}

/// A `tower::Service<(Context, Req)>` as a Gannet service. On error the context the tower
/// service consumed is not returned, so the caller's context is left at its default.
#[derive(Debug, Clone)]
pub struct FromTower<T> {
    inner: T,
}

impl<T> FromTower<T> {
    /// Wraps `service`.
    pub fn new(service: T) -> Self {
        Self { inner: service }
    }
}

impl<T, Req, Resp> Service<Req> for FromTower<T>
where
    T: tower::Service<(Context, Req), Response = (Context, Resp)> + Clone + Send + Sync,
    T::Future: Send,
    T::Error: Send,
    Req: Send,
{
    type Response = Resp;
    type Error = T::Error;

    async fn call(&self, cx: &mut Context, req: Req) -> Result<Resp, T::Error> {
        let taken = std::mem::take(cx);
        let svc = self.inner.clone();
        let (back, resp) = svc.oneshot((taken, req)).await?;
        *cx = back;
        Ok(resp)
    }
}

/// A `tower::Layer` used as a Gannet layer.
#[derive(Debug, Clone)]
pub struct TowerLayer<L> {
    layer: L,
}

impl<L> TowerLayer<L> {
    /// Wraps `layer`.
    pub fn new(layer: L) -> Self {
        Self { layer }
    }
}

impl<S, L> Layer<S> for TowerLayer<L>
where
    L: tower::Layer<IntoTower<S>>,
{
    type Service = FromTower<L::Service>;

    fn layer(self, inner: S) -> Self::Service {
        FromTower::new(self.layer.layer(IntoTower::new(inner)))
    }
}
