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

/// Where a header value sits in the frame's bytes.
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    at: u32,
    len: u16,
}

/// A decoded frame: one shared reference to the frame's bytes, and where each header value and
/// the payload sit in it. Reading headers copies nothing and touches no reference count.
#[derive(Debug, Clone, Default)]
pub struct Frame {
    /// The sequence id that matches a reply to its call.
    pub seq_id: u32,
    /// The frame flags.
    pub flags: u16,
    /// The payload protocol id.
    pub protocol: u8,
    raw: RawFrame,
    ints: SmallVec<[(u16, Span); 6]>,
    strs: Vec<(Span, Span)>,
}

/// A frame's bytes and where its payload starts: what [`Frame`] and [`ReplyFrame`] share.
#[derive(Debug, Clone, Default)]
struct RawFrame {
    bytes: Bytes,
    payload_at: u32,
}

impl RawFrame {
    fn span(&self, span: Span) -> &[u8] {
        let at = span.at as usize;
        &self.bytes[at..at + usize::from(span.len)]
    }

    fn payload(&self) -> &[u8] {
        &self.bytes[self.payload_at as usize..]
    }

    fn into_payload(self) -> Bytes {
        let mut bytes = self.bytes;
        bytes.advance(self.payload_at as usize);
        bytes
    }
}

impl Frame {
    fn bytes(&self, span: Span) -> &[u8] {
        self.raw.span(span)
    }

    /// An integer-keyed header value.
    #[must_use]
    pub fn int_header(&self, key: u16) -> Option<&[u8]> {
        self.ints
            .iter()
            .find(|(k, _)| *k == key)
            .map(|&(_, v)| self.bytes(v))
    }

    /// An integer-keyed header value as UTF-8.
    #[must_use]
    pub fn int_header_str(&self, key: u16) -> Option<&str> {
        std::str::from_utf8(self.int_header(key)?).ok()
    }

    /// The integer-keyed headers, in frame order.
    pub fn int_headers(&self) -> impl Iterator<Item = (u16, &[u8])> {
        self.ints.iter().map(|&(k, v)| (k, self.bytes(v)))
    }

    /// The string-keyed headers (metainfo travels here), in frame order.
    pub fn str_headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.strs
            .iter()
            .map(|&(k, v)| (self.bytes(k), self.bytes(v)))
    }

    /// The message type, if the frame carries a known one.
    #[must_use]
    pub fn message_type(&self) -> Option<MessageType> {
        MessageType::from_ascii(self.int_header(keys::MSG_TYPE)?)
    }

    /// The payload.
    #[must_use]
    pub fn payload(&self) -> &[u8] {
        self.raw.payload()
    }

    /// The payload, sharing the frame's memory.
    #[must_use]
    pub fn into_payload(self) -> Bytes {
        self.raw.into_payload()
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

/// Integer headers encoded once, for frames that all carry them (a client's caller and service
/// names, the message type): [`FrameWriter::begin_with`] appends them with one copy instead of
/// writing each key, length and value per frame.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntHeaders {
    count: u16,
    bytes: Box<[u8]>,
}

impl IntHeaders {
    /// Encodes `ints`.
    ///
    /// # Errors
    /// A protocol error if there are more than 65,535, or a value is longer than 65,535 bytes.
    pub fn new(ints: &[(u16, &[u8])]) -> Result<Self> {
        let count = u16::try_from(ints.len())
            .map_err(|_| Error::protocol("more than 65535 integer headers"))?;
        let mut bytes = Vec::with_capacity(ints.iter().map(|(_, v)| 4 + v.len()).sum());
        for (k, v) in ints {
            let len = u16::try_from(v.len())
                .map_err(|_| Error::protocol("header value longer than 65535 bytes"))?;
            bytes.extend_from_slice(&k.to_be_bytes());
            bytes.extend_from_slice(&len.to_be_bytes());
            bytes.extend_from_slice(v);
        }
        Ok(Self {
            count,
            bytes: bytes.into(),
        })
    }
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
        Self::start(dst, seq_id, protocol, 0, &[], ints)
    }

    /// Starts a frame in `dst` with the integer headers of `encoded` and then `ints`.
    ///
    /// # Errors
    /// A protocol error if a header value is longer than 65,535 bytes, or there are more than
    /// 65,535 integer headers in all.
    pub fn begin_with(
        dst: &'a mut BytesMut,
        seq_id: u32,
        protocol: u8,
        encoded: &IntHeaders,
        ints: &[(u16, &[u8])],
    ) -> Result<Self> {
        Self::start(dst, seq_id, protocol, encoded.count, &encoded.bytes, ints)
    }

    /// `pre` holds `pre_count` encoded integer headers, which go before `ints`.
    #[inline]
    fn start(
        dst: &'a mut BytesMut,
        seq_id: u32,
        protocol: u8,
        pre_count: u16,
        pre: &[u8],
        ints: &[(u16, &[u8])],
    ) -> Result<Self> {
        let start = dst.len();
        let mut w = Self {
            dst,
            start,
            info_start: start + FIXED_LEN,
            str_count_at: None,
            str_count: 0,
        };
        // The fixed part and the integer headers are assembled on the stack and appended with
        // one copy (appending field by field checked the buffer's capacity ~20 times a frame).
        let mut head = [0u8; 256];
        head[4..6].copy_from_slice(&MAGIC.to_be_bytes());
        head[8..12].copy_from_slice(&seq_id.to_be_bytes());
        head[FIXED_LEN] = protocol;
        let mut n = FIXED_LEN + 2;
        if ints.is_empty() && pre_count == 0 {
            w.dst.extend_from_slice(&head[..n]);
            return Ok(w);
        }
        let count = u16::try_from(ints.len())
            .ok()
            .and_then(|c| c.checked_add(pre_count))
            .ok_or_else(|| Error::protocol("more than 65535 integer headers"))?;
        let size = 3 + pre.len() + ints.iter().map(|(_, v)| 4 + v.len()).sum::<usize>();
        if n + size > head.len() {
            // Long values: field by field, with their lengths checked.
            w.dst.extend_from_slice(&head[..n]);
            w.dst.put_u8(info::INT_KEY_VALUE);
            w.dst.put_u16(count);
            w.dst.extend_from_slice(pre);
            for (k, v) in ints {
                w.dst.put_u16(*k);
                w.put_short_bytes(v)?;
            }
            return Ok(w);
        }
        head[n] = info::INT_KEY_VALUE;
        head[n + 1..n + 3].copy_from_slice(&count.to_be_bytes());
        n += 3;
        // `begin` (the server's replies) has none: skip the `memcpy` call a zero-length copy
        // still makes.
        if !pre.is_empty() {
            head[n..n + pre.len()].copy_from_slice(pre);
            n += pre.len();
        }
        for (k, v) in ints {
            // Each value is shorter than the 256-byte buffer, so its length fits in a u16.
            head[n..n + 2].copy_from_slice(&k.to_be_bytes());
            head[n + 2..n + 4].copy_from_slice(&(v.len() as u16).to_be_bytes());
            head[n + 4..n + 4 + v.len()].copy_from_slice(v);
            n += 4 + v.len();
        }
        w.dst.extend_from_slice(&head[..n]);
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
        let start = self.start;
        let dst = self.end_header()?;
        write_payload(dst)?;
        patch_len(dst, start, 0)
    }

    /// Ends the header of a frame whose `payload_len` bytes of payload the caller writes after
    /// the buffer (for a vectored write that does not copy the payload).
    ///
    /// # Errors
    /// A protocol error if the header exceeds TTHeader's limit or the frame exceeds 4 GiB.
    pub fn finish_header(self, payload_len: usize) -> Result<()> {
        let start = self.start;
        let dst = self.end_header()?;
        patch_len(dst, start, payload_len)
    }

    /// Writes the string-header count and the padding, and patches the header size.
    fn end_header(self) -> Result<&'a mut BytesMut> {
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
        Ok(dst)
    }
}

/// Patches the length field of the frame at `start`, which ends `after` bytes past `dst`.
fn patch_len(dst: &mut BytesMut, start: usize, after: usize) -> Result<()> {
    let len = u32::try_from(dst.len() - start - 4 + after)
        .map_err(|_| Error::protocol("frame larger than 4 GiB"))?;
    dst[start..start + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
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
    let Some(raw) = take_frame(src, max_frame_size)? else {
        return Ok(None);
    };
    let p = parse::<FrameHeaders>(raw)?;
    Ok(Some(Frame {
        seq_id: p.seq_id,
        flags: p.flags,
        protocol: p.protocol,
        ints: p.headers.ints,
        strs: p.headers.strs,
        raw: p.raw,
    }))
}

/// [`decode`] for a client reading replies: keeps only what a reply needs (its message type
/// and status code; the payload), with the same checks of the whole frame, and none of the
/// header lists a [`Frame`] builds.
///
/// # Errors
/// As [`decode`].
pub fn decode_reply(src: &mut BytesMut, max_frame_size: usize) -> Result<Option<ReplyFrame>> {
    let Some(raw) = take_frame(src, max_frame_size)? else {
        return Ok(None);
    };
    let p = parse::<ReplyHeaders>(raw)?;
    Ok(Some(ReplyFrame {
        seq_id: p.seq_id,
        headers: p.headers,
        raw: p.raw,
    }))
}

/// A reply frame as [`decode_reply`] reads it.
#[derive(Debug, Clone)]
pub struct ReplyFrame {
    /// The sequence id of the call it answers.
    pub seq_id: u32,
    headers: ReplyHeaders,
    raw: RawFrame,
}

impl ReplyFrame {
    fn bytes(&self, span: Span) -> &[u8] {
        self.raw.span(span)
    }

    /// The message type, if the frame carries a known one.
    #[must_use]
    pub fn message_type(&self) -> Option<MessageType> {
        MessageType::from_ascii(self.bytes(self.headers.msg_type?))
    }

    /// The status code header as UTF-8, if there is one.
    #[must_use]
    pub fn status_code(&self) -> Option<&str> {
        std::str::from_utf8(self.bytes(self.headers.status?)).ok()
    }

    /// The payload.
    #[must_use]
    pub fn payload(&self) -> &[u8] {
        self.raw.payload()
    }

    /// The payload, sharing the frame's memory.
    #[must_use]
    pub fn into_payload(self) -> Bytes {
        self.raw.into_payload()
    }
}

/// Takes the bytes of one whole frame off the front of `src` (its length and magic checked).
#[inline]
fn take_frame(src: &mut BytesMut, max_frame_size: usize) -> Result<Option<Bytes>> {
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
    Ok(Some(src.split_to(4 + len).freeze()))
}

/// A bounds-checked reader over a frame's header.
struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
    end: usize,
}

impl Cursor<'_> {
    fn has_remaining(&self) -> bool {
        self.pos < self.end
    }

    // Inlined into the parser, with the error built out of line: called as a function, the
    // bounds check cost ~17 instructions per header field (~120 per reply frame).
    #[inline(always)]
    fn take(&mut self, n: usize, what: &str) -> Result<usize> {
        if self.end - self.pos < n {
            return Err(truncated(what));
        }
        let at = self.pos;
        self.pos += n;
        Ok(at)
    }

    #[inline(always)]
    fn u8(&mut self, what: &str) -> Result<u8> {
        let at = self.take(1, what)?;
        Ok(self.b[at])
    }

    #[inline(always)]
    fn u16(&mut self, what: &str) -> Result<u16> {
        let at = self.take(2, what)?;
        Ok(u16::from_be_bytes([self.b[at], self.b[at + 1]]))
    }

    /// A u16-length-prefixed value.
    #[inline(always)]
    fn short_bytes(&mut self, what: &str) -> Result<Span> {
        let len = self.u16(what)?;
        let at = self.take(usize::from(len), what)?;
        Ok(Span {
            // The whole header is within the first 4 + 14 + 256 KiB bytes of the frame.
            at: at as u32,
            len,
        })
    }
}

#[cold]
#[inline(never)]
fn truncated(what: &str) -> Error {
    Error::protocol(format!("truncated {what}"))
}

/// Where a parse puts the headers it reads.
trait Headers: Default {
    fn int(&mut self, key: u16, value: Span);
    fn str(&mut self, key: Span, value: Span);
}

/// Every header, for a [`Frame`].
#[derive(Default)]
struct FrameHeaders {
    ints: SmallVec<[(u16, Span); 6]>,
    strs: Vec<(Span, Span)>,
}

impl Headers for FrameHeaders {
    #[inline]
    fn int(&mut self, key: u16, value: Span) {
        self.ints.push((key, value));
    }
    #[inline]
    fn str(&mut self, key: Span, value: Span) {
        self.strs.push((key, value));
    }
}

/// The two headers a reply's receiver reads (the first of each, as [`Frame::int_header`]).
#[derive(Debug, Clone, Copy, Default)]
struct ReplyHeaders {
    msg_type: Option<Span>,
    status: Option<Span>,
}

impl Headers for ReplyHeaders {
    #[inline]
    fn int(&mut self, key: u16, value: Span) {
        match key {
            keys::MSG_TYPE if self.msg_type.is_none() => self.msg_type = Some(value),
            keys::STATUS_CODE if self.status.is_none() => self.status = Some(value),
            _ => {}
        }
    }
    #[inline]
    fn str(&mut self, _key: Span, _value: Span) {}
}

/// A parsed frame: its fixed fields, its headers as `H` keeps them, and its bytes.
struct Parsed<H> {
    seq_id: u32,
    flags: u16,
    protocol: u8,
    headers: H,
    raw: RawFrame,
}

/// Parses a whole frame (length field included; its length and magic already checked).
#[inline]
fn parse<H: Headers>(raw: Bytes) -> Result<Parsed<H>> {
    let b = &raw[..];
    if b.len() < FIXED_LEN {
        return Err(Error::protocol("truncated frame header"));
    }
    let flags = u16::from_be_bytes([b[6], b[7]]);
    let seq_id = u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
    let header_len = usize::from(u16::from_be_bytes([b[12], b[13]])) * 4;
    if header_len < 2 {
        return Err(Error::protocol("frame header size is zero"));
    }
    let end = FIXED_LEN + header_len;
    if b.len() < end {
        return Err(Error::protocol("truncated frame header"));
    }
    let mut h = Cursor {
        b,
        pos: FIXED_LEN,
        end,
    };
    let protocol = h.u8("frame header")?;
    let transforms = h.u8("frame header")?;
    if transforms > 0 {
        return Err(Error::protocol(format!(
            "frame uses {transforms} transforms; none are supported"
        )));
    }
    let mut headers = H::default();
    while h.has_remaining() {
        match h.u8("frame header")? {
            info::PADDING => {
                if b[h.pos..end].iter().any(|&x| x != 0) {
                    return Err(Error::protocol("non-zero bytes after header padding"));
                }
                break;
            }
            info::KEY_VALUE => {
                let n = h.u16("string header count")?;
                for _ in 0..n {
                    let k = h.short_bytes("string header key")?;
                    let v = h.short_bytes("string header value")?;
                    headers.str(k, v);
                }
            }
            info::INT_KEY_VALUE => {
                let n = h.u16("int header count")?;
                for _ in 0..n {
                    let k = h.u16("int header key")?;
                    let v = h.short_bytes("int header value")?;
                    headers.int(k, v);
                }
            }
            info::ACL_TOKEN => {
                h.short_bytes("acl token")?;
            }
            other => {
                return Err(Error::protocol(format!(
                    "unknown header info id {other:#04x}"
                )));
            }
        }
    }
    Ok(Parsed {
        seq_id,
        flags,
        protocol,
        headers,
        raw: RawFrame {
            bytes: raw,
            payload_at: end as u32,
        },
    })
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
        let strs: Vec<_> = f.str_headers().collect();
        assert_eq!(strs, [(&b"RPC_PERSIST_tenant"[..], &b"acme"[..])]);
        let ints: Vec<_> = f.int_headers().collect();
        assert_eq!(
            ints,
            [(keys::TO_METHOD, &b"Echo"[..]), (keys::MSG_TYPE, &b"1"[..])]
        );
        assert_eq!(f.payload(), b"payload");
        assert_eq!(&f.into_payload()[..], b"payload");
    }

    #[test]
    fn a_header_finished_for_a_later_payload_decodes_with_it() {
        let mut buf = BytesMut::new();
        let w =
            FrameWriter::begin(&mut buf, 9, protocol::PROTOBUF, &[(keys::MSG_TYPE, b"2")]).unwrap();
        w.finish_header(4).unwrap();
        assert!(
            decode(&mut buf.clone(), 1024).unwrap().is_none(),
            "payload still missing"
        );
        buf.extend_from_slice(b"abcd");
        let f = decode(&mut buf, 1024).unwrap().unwrap();
        assert_eq!((f.seq_id, f.payload()), (9, &b"abcd"[..]));
        assert!(buf.is_empty());
    }

    #[test]
    fn long_int_headers_round_trip_and_oversized_ones_are_refused() {
        let long = vec![b'm'; 300];
        let mut buf = BytesMut::new();
        let w = FrameWriter::begin(
            &mut buf,
            3,
            protocol::PROTOBUF,
            &[(keys::TO_METHOD, &long), (keys::MSG_TYPE, b"1")],
        )
        .unwrap();
        w.finish(b"p").unwrap();
        let f = decode(&mut buf, DEFAULT_MAX_FRAME_SIZE).unwrap().unwrap();
        assert_eq!(f.int_header(keys::TO_METHOD), Some(&long[..]));
        assert_eq!(f.message_type(), Some(MessageType::Call));
        assert_eq!(f.payload(), b"p");

        let huge = vec![b'x'; 70_000];
        let mut buf = BytesMut::new();
        let err = FrameWriter::begin(&mut buf, 4, protocol::PROTOBUF, &[(keys::TO_METHOD, &huge)])
            .unwrap_err();
        assert!(err.message().contains("longer than 65535"), "{err}");
    }

    #[test]
    fn pre_encoded_int_headers_go_out_with_the_frame_ones() {
        let fixed =
            IntHeaders::new(&[(keys::MSG_TYPE, b"1"), (keys::FROM_SERVICE, b"caller")]).unwrap();
        let long = vec![b'm'; 300];
        // Short values are assembled on the stack; a long one takes the field-by-field path.
        for method in [&b"Echo"[..], &long[..]] {
            let mut buf = BytesMut::new();
            let w = FrameWriter::begin_with(
                &mut buf,
                5,
                protocol::PROTOBUF,
                &fixed,
                &[(keys::TO_METHOD, method)],
            )
            .unwrap();
            w.finish(b"body").unwrap();
            let f = decode(&mut buf, DEFAULT_MAX_FRAME_SIZE).unwrap().unwrap();
            assert_eq!(
                f.int_headers().collect::<Vec<_>>(),
                vec![
                    (keys::MSG_TYPE, &b"1"[..]),
                    (keys::FROM_SERVICE, &b"caller"[..]),
                    (keys::TO_METHOD, method),
                ]
            );
            assert_eq!(f.seq_id, 5);
            assert_eq!(f.payload(), b"body");
        }
        // Only pre-encoded headers.
        let mut buf = BytesMut::new();
        let w = FrameWriter::begin_with(&mut buf, 6, protocol::PROTOBUF, &fixed, &[]).unwrap();
        w.finish(b"").unwrap();
        let f = decode(&mut buf, DEFAULT_MAX_FRAME_SIZE).unwrap().unwrap();
        assert_eq!(f.int_headers().count(), 2);
        assert_eq!(f.message_type(), Some(MessageType::Call));

        let huge = vec![b'x'; 70_000];
        let err = IntHeaders::new(&[(keys::FROM_SERVICE, &huge)]).unwrap_err();
        assert!(err.message().contains("longer than 65535"), "{err}");
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
    fn decode_reply_reads_what_a_reply_needs_and_checks_what_decode_checks() {
        let mut buf = BytesMut::new();
        let mut w = FrameWriter::begin(
            &mut buf,
            9,
            protocol::PROTOBUF,
            &[
                (keys::MSG_TYPE, b"3"),
                (keys::STATUS_CODE, b"4004"),
                (keys::TO_METHOD, b"Echo"),
            ],
        )
        .unwrap();
        w.str_header("RPC_PERSIST_", "tenant", "acme").unwrap();
        w.finish(b"not found").unwrap();
        let bytes = buf.clone();
        let r = decode_reply(&mut buf, DEFAULT_MAX_FRAME_SIZE)
            .unwrap()
            .unwrap();
        assert!(buf.is_empty(), "the whole frame is taken");
        assert_eq!(r.seq_id, 9);
        assert_eq!(r.message_type(), Some(MessageType::Exception));
        assert_eq!(r.status_code(), Some("4004"));
        assert_eq!(r.payload(), b"not found");
        assert_eq!(&r.into_payload()[..], b"not found");

        // No status code; message type unknown.
        let mut buf = frame_with_ints(&[(keys::MSG_TYPE, b"9")]);
        let r = decode_reply(&mut buf, DEFAULT_MAX_FRAME_SIZE)
            .unwrap()
            .unwrap();
        assert_eq!(r.message_type(), None);
        assert_eq!(r.status_code(), None);

        // Every prefix waits for more; every corruption decode refuses, decode_reply refuses.
        for cut in 0..bytes.len() {
            let mut part = BytesMut::from(&bytes[..cut]);
            assert!(
                decode_reply(&mut part, DEFAULT_MAX_FRAME_SIZE)
                    .unwrap()
                    .is_none()
            );
        }
        for at in 4..bytes.len() {
            for value in [0x00, 0x7f, 0xff] {
                let mut bad = bytes.clone();
                bad[at] = value;
                let full = decode(&mut bad.clone(), DEFAULT_MAX_FRAME_SIZE).map(|f| f.is_some());
                let reply = decode_reply(&mut bad, DEFAULT_MAX_FRAME_SIZE).map(|f| f.is_some());
                assert_eq!(
                    full.is_err(),
                    reply.is_err(),
                    "byte {at} = {value:#x}: decode {full:?}, decode_reply {reply:?}"
                );
            }
        }
        let mut big = bytes.clone();
        assert!(decode_reply(&mut big, 8).is_err(), "the size limit holds");
    }

    fn frame_with_ints(ints: &[(u16, &[u8])]) -> BytesMut {
        let mut buf = BytesMut::new();
        FrameWriter::begin(&mut buf, 1, protocol::PROTOBUF, ints)
            .unwrap()
            .finish(b"")
            .unwrap();
        buf
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
