//! Reads a partition's raw log over the Kafka protocol (Fetch v4, read_uncommitted) and
//! resolves transactions itself from the control records (COMMIT/ABORT markers).
//!
//! Why: the test broker (tansu) has a known bug — a `read_committed` fetch still returns the
//! records of aborted transactions, because it does not send the aborted-transaction index
//! librdkafka relies on. The markers are in the log, so the exactly-once tests decide what
//! was committed the way the protocol defines it: a transactional batch of producer P counts
//! once P's next marker in that partition is COMMIT; an ABORT marker discards it.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct RawRecord {
    pub offset: i64,
    pub producer_id: i64,
    pub transactional: bool,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: BTreeMap<String, String>,
}

/// Outcome of resolving a partition's transactions.
#[derive(Debug, Default)]
pub struct Resolved {
    pub committed: Vec<RawRecord>,
    pub aborted: Vec<RawRecord>,
    /// Transactional records with no marker yet (an open transaction).
    pub open: Vec<RawRecord>,
    pub commit_markers: usize,
    pub abort_markers: usize,
}

pub fn read_partition(port: u16, topic: &str, partition: i32) -> Resolved {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut res = Resolved::default();
    let mut pending: HashMap<i64, Vec<RawRecord>> = HashMap::new();
    let mut offset = 0i64;
    let mut corr = 0;
    loop {
        corr += 1;
        let batches = fetch(&mut s, corr, topic, partition, offset);
        let mut progressed = false;
        for b in batches {
            if b.last_offset < offset {
                continue;
            }
            progressed = true;
            offset = b.last_offset + 1;
            if b.control {
                for r in &b.records {
                    // Control record key: version int16, type int16 (0 = abort, 1 = commit).
                    let key = r.key.as_deref().unwrap_or_default();
                    let kind = if key.len() >= 4 { i16::from_be_bytes([key[2], key[3]]) } else { -1 };
                    let txn = pending.remove(&b.producer_id).unwrap_or_default();
                    match kind {
                        1 => {
                            res.commit_markers += 1;
                            res.committed.extend(txn);
                        }
                        0 => {
                            res.abort_markers += 1;
                            res.aborted.extend(txn);
                        }
                        _ => panic!("unknown control record type {kind}"),
                    }
                }
            } else if b.transactional {
                pending.entry(b.producer_id).or_default().extend(b.records);
            } else {
                res.committed.extend(b.records);
            }
        }
        if !progressed {
            break;
        }
    }
    res.open = pending.into_values().flatten().collect();
    res
}

struct Batch {
    last_offset: i64,
    producer_id: i64,
    transactional: bool,
    control: bool,
    records: Vec<RawRecord>,
}

fn fetch(s: &mut TcpStream, corr: i32, topic: &str, partition: i32, offset: i64) -> Vec<Batch> {
    let mut body = Vec::new();
    body.extend(1i16.to_be_bytes()); // Fetch
    body.extend(4i16.to_be_bytes()); // v4: record batches, isolation level
    body.extend(corr.to_be_bytes());
    put_str(&mut body, "rawlog");
    body.extend((-1i32).to_be_bytes()); // replica id
    body.extend(500i32.to_be_bytes()); // max wait
    body.extend(1i32.to_be_bytes()); // min bytes
    body.extend((8i32 << 20).to_be_bytes()); // max bytes
    body.push(0); // read_uncommitted: we resolve markers ourselves
    body.extend(1i32.to_be_bytes());
    put_str(&mut body, topic);
    body.extend(1i32.to_be_bytes());
    body.extend(partition.to_be_bytes());
    body.extend(offset.to_be_bytes());
    body.extend((8i32 << 20).to_be_bytes());
    s.write_all(&(body.len() as i32).to_be_bytes()).unwrap();
    s.write_all(&body).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut resp = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut resp).unwrap();
    let mut c = Cur { b: &resp, i: 0 };
    assert_eq!(c.i32(), corr);
    c.i32(); // throttle
    let topics = c.i32();
    let mut out = Vec::new();
    for _ in 0..topics {
        c.string();
        let parts = c.i32();
        for _ in 0..parts {
            c.i32();
            let err = c.i16();
            assert_eq!(err, 0, "fetch error {err}");
            c.i64();
            c.i64();
            let aborted = c.i32();
            for _ in 0..aborted.max(0) {
                c.i64();
                c.i64();
            }
            let size = c.i32().max(0) as usize;
            let end = c.i + size;
            while c.i + 61 <= end {
                let base = c.i64();
                let blen = c.i32() as usize;
                let bend = c.i + blen;
                if bend > end {
                    break; // partial batch at the end of the response
                }
                c.i32(); // leader epoch
                let magic = c.b[c.i];
                c.i += 1;
                assert_eq!(magic, 2, "record batch v2 expected");
                c.i32(); // crc
                let attrs = c.i16();
                assert_eq!(attrs & 0x7, 0, "compressed batches are not expected here");
                let last_delta = c.i32();
                c.i64();
                c.i64();
                let producer_id = c.i64();
                c.i16();
                c.i32();
                let n = c.i32();
                let mut records = Vec::new();
                for _ in 0..n {
                    c.varint(); // length
                    c.i += 1; // attributes
                    c.varint(); // timestamp delta
                    let od = c.varint();
                    let key = c.bytes();
                    let value = c.bytes();
                    let hn = c.varint();
                    let mut headers = BTreeMap::new();
                    for _ in 0..hn {
                        let k = c.bytes().unwrap_or_default();
                        let v = c.bytes().unwrap_or_default();
                        headers
                            .insert(String::from_utf8_lossy(&k).into_owned(), String::from_utf8_lossy(&v).into_owned());
                    }
                    records.push(RawRecord {
                        offset: base + od,
                        producer_id,
                        transactional: attrs & 0x10 != 0,
                        key,
                        value,
                        headers,
                    });
                }
                c.i = bend;
                out.push(Batch {
                    last_offset: base + last_delta as i64,
                    producer_id,
                    transactional: attrs & 0x10 != 0,
                    control: attrs & 0x20 != 0,
                    records,
                });
            }
            c.i = end;
        }
    }
    out
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend((s.len() as i16).to_be_bytes());
    b.extend(s.as_bytes());
}

struct Cur<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cur<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let a: [u8; N] = self.b[self.i..self.i + N].try_into().unwrap();
        self.i += N;
        a
    }
    fn i16(&mut self) -> i16 {
        i16::from_be_bytes(self.take())
    }
    fn i32(&mut self) -> i32 {
        i32::from_be_bytes(self.take())
    }
    fn i64(&mut self) -> i64 {
        i64::from_be_bytes(self.take())
    }
    fn string(&mut self) -> String {
        let n = self.i16() as usize;
        let s = String::from_utf8_lossy(&self.b[self.i..self.i + n]).into_owned();
        self.i += n;
        s
    }
    fn varint(&mut self) -> i64 {
        let mut v: u64 = 0;
        let mut shift = 0;
        loop {
            let byte = self.b[self.i];
            self.i += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        ((v >> 1) as i64) ^ -((v & 1) as i64)
    }
    fn bytes(&mut self) -> Option<Vec<u8>> {
        let n = self.varint();
        if n < 0 {
            return None;
        }
        let v = self.b[self.i..self.i + n as usize].to_vec();
        self.i += n as usize;
        Some(v)
    }
}
