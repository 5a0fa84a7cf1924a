//! Type-erased futures stored in the caller's own future instead of on the heap.
//!
//! The one module of `gannet-core` with `unsafe` code (STYLE.md allows one audited module for
//! the hot path). A middleware chain is erased (`Arc<dyn …>`), so calling it returns a future of
//! a type the caller cannot name; the usual answer, `Box::pin`, costs a `malloc`/`free` pair and
//! a copy per call. Here the caller lends a [`Slot`] (a fixed-size, aligned buffer, pinned inside
//! the caller's future) and the erased service builds its future in it when it fits; when it
//! does not, it is boxed as before.
//!
//! Why this is sound:
//! - a future is written into a slot only while the slot is pinned and empty; the slot records
//!   it as two functions monomorphised for its type (`poll` and `drop` in place), never as a
//!   pointer: every access derives the future's address afresh from the slot it is reached
//!   through, so no pointer outlives the borrow it came from;
//! - the slot is `!Unpin`, so once pinned its memory stays put until it is dropped;
//! - the occupant is dropped in place exactly once: by the [`InlineFuture`] that polls it, or,
//!   if that handle was leaked, by the slot's own `Drop`, before the slot's memory goes away. So
//!   `Pin`'s drop guarantee holds for the occupant even under `mem::forget`;
//! - the occupant's lifetime `'a` appears (invariantly) in the slot's type and the slot has a
//!   `Drop` impl, so the borrow checker keeps every borrow the occupant holds alive until the
//!   slot is dropped.
#![expect(
    unsafe_code,
    reason = "in-place type erasure of futures on the call path; audited here only"
)]

use std::future::Future;
use std::marker::{PhantomData, PhantomPinned};
use std::mem::{MaybeUninit, align_of, size_of};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use futures::future::BoxFuture;

/// Bytes a slot holds: a client invoker's future (~220 bytes) under a typed middleware (only
/// the innermost middleware holds the invoker's future; outer ones hold a boxed or inline
/// handle). A test in `client` checks that such a chain fits.
pub(crate) const SLOT_BYTES: usize = 512;

/// The storage of a slot, aligned for any future up to 16-byte alignment.
#[repr(C, align(16))]
struct Storage(MaybeUninit<[u8; SLOT_BYTES]>);

/// How to poll and drop the future in a slot, for its concrete type.
struct Occupant<T> {
    poll: unsafe fn(*mut u8, &mut TaskContext<'_>) -> Poll<T>,
    drop: unsafe fn(*mut u8),
}

/// Polls the `F` at `data`.
///
/// # Safety
/// `data` points to a live, pinned `F` that nothing else accesses meanwhile.
unsafe fn poll_in_place<F: Future>(data: *mut u8, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
    // SAFETY: the caller's contract.
    unsafe { Pin::new_unchecked(&mut *data.cast::<F>()) }.poll(cx)
}

/// Drops the `F` at `data`.
///
/// # Safety
/// `data` points to a live `F` that is never used again.
unsafe fn drop_in_place<F>(data: *mut u8) {
    // SAFETY: the caller's contract.
    unsafe { data.cast::<F>().drop_in_place() }
}

/// Room for one future of output `T` borrowing for `'a`.
///
/// `occupant` comes first on purpose: with the uninitialised storage first, LLVM merges
/// "storage: anything, occupant: none" into one `memset` of the whole slot per call.
#[repr(C)]
pub(crate) struct Slot<'a, T> {
    occupant: Option<Occupant<T>>,
    storage: Storage,
    _borrows: PhantomData<fn(&'a ()) -> &'a ()>,
    _pinned: PhantomPinned,
}

impl<T> Slot<'_, T> {
    /// An empty slot; pin it (`std::pin::pin!`) to lend it.
    #[inline(always)]
    pub(crate) fn new() -> Self {
        Self {
            occupant: None,
            storage: Storage(MaybeUninit::uninit()),
            _borrows: PhantomData,
            _pinned: PhantomPinned,
        }
    }

    /// Drops the occupant, if any, and leaves the slot empty.
    fn evict(&mut self) {
        if let Some(o) = self.occupant.take() {
            let data = self.storage.0.as_mut_ptr().cast::<u8>();
            // SAFETY: the occupant was written into this storage by `InlineFuture::new` and not
            // dropped since (it is taken out of `occupant` here, once); the slot has not moved
            // (it is `!Unpin` and was pinned when the occupant was written).
            unsafe { (o.drop)(data) };
        }
    }
}

impl<T> Drop for Slot<'_, T> {
    fn drop(&mut self) {
        self.evict();
    }
}

impl<T> std::fmt::Debug for Slot<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("occupied", &self.occupant.is_some())
            .finish()
    }
}

/// A type-erased future living in a [`Slot`], or on the heap when it did not fit.
pub(crate) struct InlineFuture<'s, 'a, T> {
    inner: Where<'s, 'a, T>,
}

enum Where<'s, 'a, T> {
    Slot(Pin<&'s mut Slot<'a, T>>),
    Heap(BoxFuture<'a, T>),
}

impl<'s, 'a, T> InlineFuture<'s, 'a, T> {
    /// Puts the future `make` returns into `slot` if it fits and the slot is empty, else on the
    /// heap. Taking a constructor rather than the future lets the compiler build it in place
    /// instead of building it on the stack and copying it in.
    #[inline(always)]
    pub(crate) fn new<F>(mut slot: Pin<&'s mut Slot<'a, T>>, make: impl FnOnce() -> F) -> Self
    where
        F: Future<Output = T> + Send + 'a,
    {
        let fits = size_of::<F>() <= SLOT_BYTES && align_of::<F>() <= align_of::<Storage>();
        if !fits || slot.occupant.is_some() {
            return Self::heap(Box::pin(make()));
        }
        // SAFETY: we write into the storage and set `occupant`; nothing moves out of the pinned
        // slot.
        let s = unsafe { slot.as_mut().get_unchecked_mut() };
        // SAFETY: the storage is large and aligned enough for `F` (checked above) and holds no
        // live value (the slot is empty).
        unsafe { s.storage.0.as_mut_ptr().cast::<F>().write(make()) };
        s.occupant = Some(Occupant {
            poll: poll_in_place::<F>,
            drop: drop_in_place::<F>,
        });
        Self {
            inner: Where::Slot(slot),
        }
    }

    /// A future already on the heap.
    pub(crate) fn heap(fut: BoxFuture<'a, T>) -> Self {
        Self {
            inner: Where::Heap(fut),
        }
    }

    /// Whether the future lives in the slot (for tests).
    #[cfg(test)]
    fn is_inline(&self) -> bool {
        matches!(self.inner, Where::Slot(_))
    }
}

impl<T> Future for InlineFuture<'_, '_, T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<T> {
        // `InlineFuture` is `Unpin`: it holds a pinned reference or a pinned box.
        match &mut self.get_mut().inner {
            Where::Heap(f) => f.as_mut().poll(cx),
            Where::Slot(slot) => {
                // SAFETY: polling moves nothing out of the pinned slot.
                let s = unsafe { slot.as_mut().get_unchecked_mut() };
                let Some(o) = &s.occupant else {
                    unreachable!("an inline future's slot holds it until the handle drops")
                };
                let data = s.storage.0.as_mut_ptr().cast::<u8>();
                // SAFETY: the occupant lives in this pinned storage (written by `new`, dropped
                // only through `evict`), and `s` is the only access to it right now.
                unsafe { (o.poll)(data, cx) }
            }
        }
    }
}

impl<T> Drop for InlineFuture<'_, '_, T> {
    fn drop(&mut self) {
        if let Where::Slot(slot) = &mut self.inner {
            // SAFETY: evicting drops the occupant in place; nothing moves out of the slot.
            unsafe { slot.as_mut().get_unchecked_mut() }.evict();
        }
    }
}

impl<T> std::fmt::Debug for InlineFuture<'_, '_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.inner {
            Where::Slot(_) => "InlineFuture(slot)",
            Where::Heap(_) => "InlineFuture(heap)",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct CountDrop(Arc<AtomicUsize>);
    impl Drop for CountDrop {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn small_futures_run_in_the_slot_and_drop_once() {
        let drops = Arc::new(AtomicUsize::new(0));
        let guard = CountDrop(drops.clone());
        let slot = pin!(Slot::new());
        let fut = InlineFuture::new(slot, || async move {
            tokio::task::yield_now().await;
            let _g = guard;
            7
        });
        assert!(fut.is_inline());
        assert_eq!(fut.await, 7);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn large_futures_go_to_the_heap() {
        let big = [1u8; SLOT_BYTES * 2];
        let slot = pin!(Slot::new());
        let fut = InlineFuture::new(slot, || async move {
            tokio::task::yield_now().await;
            big.iter().map(|&b| usize::from(b)).sum::<usize>()
        });
        assert!(!fut.is_inline());
        assert_eq!(fut.await, SLOT_BYTES * 2);
    }

    #[test]
    fn a_cancelled_future_is_dropped_with_its_handle() {
        let drops = Arc::new(AtomicUsize::new(0));
        let guard = CountDrop(drops.clone());
        let mut slot = pin!(Slot::<()>::new());
        let fut = InlineFuture::new(slot.as_mut(), || async move {
            let _g = guard;
            std::future::pending::<()>().await;
        });
        drop(fut);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        // The slot is empty again and can take another future.
        let again = InlineFuture::new(slot.as_mut(), || async {});
        assert!(again.is_inline());
    }

    #[test]
    fn a_leaked_handle_leaves_the_drop_to_the_slot() {
        let drops = Arc::new(AtomicUsize::new(0));
        let guard = CountDrop(drops.clone());
        {
            let mut slot = pin!(Slot::<()>::new());
            let mut fut = InlineFuture::new(slot.as_mut(), || async move {
                let _g = guard;
                std::future::pending::<()>().await;
            });
            let waker = futures::task::noop_waker();
            let mut cx = TaskContext::from_waker(&waker);
            assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
            std::mem::forget(fut);
            // An occupied slot sends the next future to the heap instead of overwriting.
            let next = InlineFuture::new(slot.as_mut(), || async {});
            assert!(!next.is_inline());
            assert_eq!(drops.load(Ordering::SeqCst), 0);
        }
        assert_eq!(
            drops.load(Ordering::SeqCst),
            1,
            "the slot dropped its occupant"
        );
    }
}
