//! TTHeader framing, the header format Kitex and Volo speak.
//!
//! ```text
//! 0      4        6       8          12          14                      14+4*H
//! +------+--------+-------+----------+-----------+-----------------------+---------+
//! |LENGTH| 0x1000 | FLAGS | SEQ ID   | HEADER    | PROTOCOL ID, NUM      | PAYLOAD |
//! | u32  | magic  | u16   | u32      | SIZE (H)  | TRANSFORMS, TRANSFORM |         |
//! |      |        |       |          | u16, in 4 | IDS, INFO blocks,     |         |
//! |      |        |       |          | byte words| zero padding          |         |
//! +------+--------+-------+----------+-----------+-----------------------+---------+
//! ```
//!
//! `LENGTH` counts every byte after itself. Info blocks are `0x01` (string key/values: u16
//! count, then u16-length-prefixed key and value), `0x10` (integer key/values: u16 count, then
//! u16 key and u16-length-prefixed value) and `0x00` (padding to the end of the header).
//!
//! Decoding never trusts a length: a frame longer than the configured maximum is rejected before
//! anything of its claimed size is allocated, and every field is bounds-checked.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use smallvec::SmallVec;

use crate::error::{Error, Result};

/// The TTHeader magic number.
pub const MAGIC: u16 = 0x1000;
/// The default maximum frame size (16 MiB).
pub const DEFAULT_MAX_FRAME_SIZE: usize = 16 * 1024 * 1024;
/// Bytes of the fixed part of a frame, including the length field.
const FIXED_LEN: usize = 14;

/// Info block ids.
mod info {
    pub(super) const PADDING: u8 = 0x00;
    pub(super) const KEY_VALUE: u8 = 0x01;
    pub(super) const INT_KEY_VALUE: u8 = 0x10;
    pub(super) const ACL_TOKEN: u8 = 0x11;
}

/// Integer header keys (Kitex's numbering where Kitex has the key).
pub mod keys {
    /// The calling service.
    pub const FROM_SERVICE: u16 = 3;
    /// The called service.
    pub const TO_SERVICE: u16 = 6;
    /// The called method.
    pub const TO_METHOD: u16 = 9;
    /// The caller's timeout for this call, in milliseconds.
    pub const RPC_TIMEOUT: u16 = 12;
    /// The message type (see [`super::MessageType`]).
    pub const MSG_TYPE: u16 = 22;
    /// The status code of an exception reply (Gannet).
    pub const STATUS_CODE: u16 = 0x8001;
}

/// Payload protocol ids.
pub mod protocol {
    /// Protobuf payloads.
    pub const PROTOBUF: u8 = 0x04;
}

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// A request that expects a reply.
    Call = 1,
    /// A successful reply.
    Reply = 2,
    /// An error reply; the payload is the message, [`keys::STATUS_CODE`] the code.
    Exception = 3,
}

impl MessageType {
    fn from_ascii(v: &[u8]) -> Option<Self> {
        match v {
            b"1" => Some(Self::Call),
            b"2" => Some(Self::Reply),
            b"3" => Some(Self::Exception),
            _ => None,
        }
    }

    pub(crate) fn as_ascii(self) -> &'static [u8] {
        match self {
            Self::Call => b"1",
            Self::Reply => b"2",
            Self::Exception => b"3",
        }
    }
}

/// A decoded frame; every field is a zero-copy slice of the read buffer.
#[derive(Debug, Clone, Default)]
pub struct Frame {
    /// The sequence id that matches a reply to its call.
    pub seq_id: u32,
    /// The frame flags.
    pub flags: u16,
    /// The payload protocol id.
    pub protocol: u8,
    /// Integer-keyed header values.
    pub int_headers: SmallVec<[(u16, Bytes); 4]>,
    /// String-keyed header values (metainfo travels here).
    pub str_headers: Vec<(Bytes, Bytes)>,
    /// The payload.
    pub payload: Bytes,
}

impl Frame {
    /// An integer-keyed header value.
    #[must_use]
    pub fn int_header(&self, key: u16) -> Option<&Bytes> {
        self.int_headers
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    /// An integer-keyed header value as UTF-8.
    #[must_use]
    pub fn int_header_str(&self, key: u16) -> Option<&str> {
        std::str::from_utf8(self.int_header(key)?).ok()
    }

    /// The message type, if the frame carries a known one.
    #[must_use]
    pub fn message_type(&self) -> Option<MessageType> {
        MessageType::from_ascii(self.int_header(keys::MSG_TYPE)?)
    }
}

/// Writes one frame into a buffer: the header first, then the payload, then the length is
/// patched in. Nothing is allocated besides growing `dst`.
#[derive(Debug)]
pub struct FrameWriter<'a> {
    dst: &'a mut BytesMut,
    start: usize,
    info_start: usize,
    str_count_at: Option<usize>,
    str_count: u16,
}

impl<'a> FrameWriter<'a> {
    /// Starts a frame in `dst` with integer headers `ints`.
    ///
    /// # Errors
    /// A protocol error if a header value is longer than 65,535 bytes.
    pub fn begin(
        dst: &'a mut BytesMut,
        seq_id: u32,
        protocol: u8,
        ints: &[(u16, &[u8])],
    ) -> Result<Self> {
        let start = dst.len();
        dst.reserve(64);
        dst.put_u32(0);
        dst.put_u16(MAGIC);
        dst.put_u16(0);
        dst.put_u32(seq_id);
        dst.put_u16(0);
        let info_start = dst.len();
        dst.put_u8(protocol);
        dst.put_u8(0);
        let mut w = Self {
            dst,
            start,
            info_start,
            str_count_at: None,
            str_count: 0,
        };
        if !ints.is_empty() {
            w.dst.put_u8(info::INT_KEY_VALUE);
            w.dst.put_u16(ints.len() as u16);
            for (k, v) in ints {
                w.dst.put_u16(*k);
                w.put_short_bytes(v)?;
            }
        }
        Ok(w)
    }

    fn put_short_bytes(&mut self, v: &[u8]) -> Result<()> {
        let len = u16::try_from(v.len())
            .map_err(|_| Error::protocol("header value longer than 65535 bytes"))?;
        self.dst.put_u16(len);
        self.dst.put_slice(v);
        Ok(())
    }

    /// Adds a string header whose key is `prefix` followed by `key`.
    ///
    /// # Errors
    /// A protocol error if the key or value is longer than 65,535 bytes.
    pub fn str_header(&mut self, prefix: &str, key: &str, value: &str) -> Result<()> {
        if self.str_count_at.is_none() {
            self.dst.put_u8(info::KEY_VALUE);
            self.str_count_at = Some(self.dst.len());
            self.dst.put_u16(0);
        }
        if self.str_count == u16::MAX {
            return Err(Error::protocol("more than 65535 string headers"));
        }
        let klen = u16::try_from(prefix.len() + key.len())
            .map_err(|_| Error::protocol("header key longer than 65535 bytes"))?;
        self.dst.put_u16(klen);
        self.dst.put_slice(prefix.as_bytes());
        self.dst.put_slice(key.as_bytes());
        self.put_short_bytes(value.as_bytes())?;
        self.str_count += 1;
        Ok(())
    }

    /// Ends the header and appends `payload`.
    ///
    /// # Errors
    /// A protocol error if the header exceeds TTHeader's limit or the frame exceeds 4 GiB.
    pub fn finish(self, payload: &[u8]) -> Result<()> {
        self.finish_with(|dst| {
            dst.put_slice(payload);
            Ok(())
        })
    }

    /// Ends the header and lets `write_payload` append the payload directly into the buffer.
    ///
    /// # Errors
    /// What `write_payload` returns, or a protocol error if the frame is too large.
    pub fn finish_with(
        self,
        write_payload: impl FnOnce(&mut BytesMut) -> Result<()>,
    ) -> Result<()> {
        let Self {
            dst,
            start,
            info_start,
            str_count_at,
            str_count,
        } = self;
        if let Some(at) = str_count_at {
            dst[at..at + 2].copy_from_slice(&str_count.to_be_bytes());
        }
        while (dst.len() - info_start) % 4 != 0 {
            dst.put_u8(info::PADDING);
        }
        let words = u16::try_from((dst.len() - info_start) / 4)
            .map_err(|_| Error::protocol("frame header larger than 256 KiB"))?;
        dst[start + 12..start + 14].copy_from_slice(&words.to_be_bytes());
        write_payload(dst)?;
        let len = u32::try_from(dst.len() - start - 4)
            .map_err(|_| Error::protocol("frame larger than 4 GiB"))?;
        dst[start..start + 4].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }
}

/// Takes one whole frame off the front of `src`, if one is there.
///
/// Returns `Ok(None)` when more bytes are needed. A frame whose length exceeds `max_frame_size`,
/// or whose bytes break the format, is an error; the caller should close the connection, since
/// the stream can no longer be trusted.
///
/// # Errors
/// A [`Protocol`](crate::ErrorKind::Protocol) error describing what is wrong with the frame.
pub fn decode(src: &mut BytesMut, max_frame_size: usize) -> Result<Option<Frame>> {
    if src.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
    if len > max_frame_size {
        return Err(Error::protocol(format!(
            "frame of {len} bytes exceeds the maximum of {max_frame_size}"
        )));
    }
    if len < FIXED_LEN - 4 + 4 {
        return Err(Error::protocol(format!(
            "frame of {len} bytes is too short"
        )));
    }
    if src.len() >= 6 {
        let magic = u16::from_be_bytes([src[4], src[5]]);
        if magic != MAGIC {
            return Err(Error::protocol(format!("bad magic {magic:#06x}")));
        }
    }
    if src.len() < 4 + len {
        // Only now reserve room, and never more than one checked frame.
        src.reserve(4 + len - src.len());
        return Ok(None);
    }
    let mut frame = src.split_to(4 + len).freeze();
    frame.advance(6);
    parse(frame).map(Some)
}

fn need(b: &Bytes, n: usize, what: &str) -> Result<()> {
    if b.remaining() < n {
        Err(Error::protocol(format!("truncated {what}")))
    } else {
        Ok(())
    }
}

fn short_bytes(b: &mut Bytes, what: &str) -> Result<Bytes> {
    need(b, 2, what)?;
    let n = b.get_u16() as usize;
    need(b, n, what)?;
    Ok(b.split_to(n))
}

fn parse(mut b: Bytes) -> Result<Frame> {
    // after magic: flags, seq id, header size
    need(&b, 8, "frame header")?;
    let flags = b.get_u16();
    let seq_id = b.get_u32();
    let header_len = b.get_u16() as usize * 4;
    if header_len < 2 {
        return Err(Error::protocol("frame header size is zero"));
    }
    need(&b, header_len, "frame header")?;
    let mut h = b.split_to(header_len);
    let payload = b;
    let protocol = h.get_u8();
    let transforms = h.get_u8() as usize;
    if transforms > 0 {
        return Err(Error::protocol(format!(
            "frame uses {transforms} transforms; none are supported"
        )));
    }
    let mut frame = Frame {
        seq_id,
        flags,
        protocol,
        payload,
        ..Frame::default()
    };
    while h.has_remaining() {
        match h.get_u8() {
            info::PADDING => {
                if h.iter().any(|&x| x != 0) {
                    return Err(Error::protocol("non-zero bytes after header padding"));
                }
                break;
            }
            info::KEY_VALUE => {
                need(&h, 2, "string header count")?;
                let n = h.get_u16();
                for _ in 0..n {
                    let k = short_bytes(&mut h, "string header key")?;
                    let v = short_bytes(&mut h, "string header value")?;
                    frame.str_headers.push((k, v));
                }
            }
            info::INT_KEY_VALUE => {
                need(&h, 2, "int header count")?;
                let n = h.get_u16();
                for _ in 0..n {
                    need(&h, 2, "int header key")?;
                    let k = h.get_u16();
                    let v = short_bytes(&mut h, "int header value")?;
                    frame.int_headers.push((k, v));
                }
            }
            info::ACL_TOKEN => {
                short_bytes(&mut h, "acl token")?;
            }
            other => {
                return Err(Error::protocol(format!(
                    "unknown header info id {other:#04x}"
                )));
            }
        }
    }
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BytesMut {
        let mut buf = BytesMut::new();
        let mut w = FrameWriter::begin(
            &mut buf,
            7,
            protocol::PROTOBUF,
            &[(keys::TO_METHOD, b"Echo"), (keys::MSG_TYPE, b"1")],
        )
        .unwrap();
        w.str_header("RPC_PERSIST_", "tenant", "acme").unwrap();
        w.finish(b"payload").unwrap();
        buf
    }

    #[test]
    fn round_trip() {
        let mut buf = sample();
        let total = buf.len();
        let f = decode(&mut buf, DEFAULT_MAX_FRAME_SIZE).unwrap().unwrap();
        assert!(buf.is_empty(), "consumed all {total} bytes");
        assert_eq!(f.seq_id, 7);
        assert_eq!(f.protocol, protocol::PROTOBUF);
        assert_eq!(f.int_header_str(keys::TO_METHOD), Some("Echo"));
        assert_eq!(f.message_type(), Some(MessageType::Call));
        assert_eq!(f.str_headers.len(), 1);
        assert_eq!(&f.str_headers[0].0[..], b"RPC_PERSIST_tenant");
        assert_eq!(&f.str_headers[0].1[..], b"acme");
        assert_eq!(&f.payload[..], b"payload");
    }

    #[test]
    fn partial_input_waits_for_more() {
        let full = sample();
        for cut in 0..full.len() {
            let mut part = BytesMut::from(&full[..cut]);
            assert!(
                decode(&mut part, DEFAULT_MAX_FRAME_SIZE).unwrap().is_none(),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn two_frames_back_to_back() {
        let mut buf = sample();
        buf.extend_from_slice(&sample());
        assert!(decode(&mut buf, 1 << 20).unwrap().is_some());
        assert!(decode(&mut buf, 1 << 20).unwrap().is_some());
        assert!(decode(&mut buf, 1 << 20).unwrap().is_none());
    }

    #[test]
    fn oversize_length_is_rejected_without_allocating_it() {
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xf0, 0x10, 0x00][..]);
        let err = decode(&mut buf, 1024).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Protocol);
        assert!(err.message().contains("exceeds the maximum"));
        assert!(buf.capacity() < 1 << 20);
    }

    #[test]
    fn wrong_magic_is_rejected_early() {
        let mut buf = BytesMut::from(&[0, 0, 0, 20, 0xde, 0xad][..]);
        let err = decode(&mut buf, 1024).unwrap_err();
        assert!(err.message().contains("bad magic"), "{err}");
    }

    #[test]
    fn header_size_past_the_frame_is_truncated() {
        let mut buf = sample();
        // header size field claims 0xffff words
        buf[12] = 0xff;
        buf[13] = 0xff;
        let err = decode(&mut buf, DEFAULT_MAX_FRAME_SIZE).unwrap_err();
        assert!(err.message().contains("truncated"), "{err}");
    }

    #[test]
    fn unknown_info_id_is_rejected() {
        let mut buf = sample();
        buf[16] = 0x7f; // first info id after protocol and transform count
        let err = decode(&mut buf, DEFAULT_MAX_FRAME_SIZE).unwrap_err();
        assert!(err.message().contains("unknown header info"), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let mut buf = BytesMut::from(&data[..]);
            while let Ok(Some(_)) = decode(&mut buf, 4096) {}
        }

        #[test]
        fn mutated_frames_never_panic(idx in 0usize..64, byte in proptest::num::u8::ANY) {
            let mut buf = sample();
            let i = idx % buf.len();
            buf[i] = byte;
            let _ = decode(&mut buf, 4096);
        }
    }
}
