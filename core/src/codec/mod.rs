//! Framing ([`ttheader`]) and payload codecs ([`Codec`], default [`ProstCodec`]).

pub mod ttheader;

use bytes::{Bytes, BytesMut};

use crate::error::{Error, ErrorKind, Result};

/// Encodes requests and decodes responses of type `T` to and from payload bytes.
pub trait Codec<T>: Send + Sync + 'static {
    /// The TTHeader protocol id of the payloads this codec writes.
    fn protocol_id(&self) -> u8;

    /// Appends the encoding of `msg` to `dst`.
    ///
    /// # Errors
    /// A [`Codec`](ErrorKind::Codec) error if the message cannot be encoded.
    fn encode(&self, msg: &T, dst: &mut BytesMut) -> Result<()>;

    /// Decodes a message from `src`; `bytes` fields may share `src`'s memory.
    ///
    /// # Errors
    /// A [`Codec`](ErrorKind::Codec) error if the bytes are not a valid message.
    fn decode(&self, src: Bytes) -> Result<T>;
}

/// Protobuf payloads through `prost`, the default codec.
///
/// Declare `bytes` fields with prost's `bytes = "bytes"` option so payloads are shared with the
/// read buffer instead of copied.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProstCodec;

impl<T: prost::Message + Default> Codec<T> for ProstCodec {
    fn protocol_id(&self) -> u8 {
        ttheader::protocol::PROTOBUF
    }

    fn encode(&self, msg: &T, dst: &mut BytesMut) -> Result<()> {
        // Reserve once: growing while encoding would reallocate and copy several times. An
        // empty buffer gets its exact allocation directly (`reserve` on it takes BytesMut's
        // out-of-line growth path, ~80 instructions more per call).
        let len = msg.encoded_len();
        if dst.capacity() == 0 {
            *dst = BytesMut::with_capacity(len);
        } else {
            dst.reserve(len);
        }
        msg.encode(dst)
            .map_err(|e| Error::with_source(ErrorKind::Codec, "protobuf encode failed", e))
    }

    fn decode(&self, src: Bytes) -> Result<T> {
        T::decode(src)
            .map_err(|e| Error::with_source(ErrorKind::Codec, "protobuf decode failed", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, PartialEq, prost::Message)]
    struct Msg {
        #[prost(string, tag = "1")]
        text: String,
        #[prost(bytes = "bytes", tag = "2")]
        data: Bytes,
    }

    #[test]
    fn prost_round_trip_and_garbage() {
        let m = Msg {
            text: "hi".into(),
            data: Bytes::from_static(&[1, 2, 3]),
        };
        let mut buf = BytesMut::new();
        ProstCodec.encode(&m, &mut buf).unwrap();
        let back: Msg = ProstCodec.decode(buf.freeze()).unwrap();
        assert_eq!(back, m);
        let err =
            <ProstCodec as Codec<Msg>>::decode(&ProstCodec, Bytes::from_static(&[0xff, 0xff]))
                .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Codec);
    }
}
