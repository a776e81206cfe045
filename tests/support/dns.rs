//! A DNS server on loopback for tests: answers A, AAAA, TXT, MX and PTR questions over UDP from
//! a zone given as records; a name it does not know is NXDOMAIN.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};

#[derive(Debug, Clone)]
pub enum Record {
    A(IpAddr),
    Txt(String),
    Mx(u16, String),
    Ptr(String),
}

impl Record {
    fn kind(&self) -> u16 {
        match self {
            Record::A(IpAddr::V4(_)) => 1,
            Record::A(IpAddr::V6(_)) => 28,
            Record::Txt(_) => 16,
            Record::Mx(..) => 15,
            Record::Ptr(_) => 12,
        }
    }

    fn data(&self) -> Vec<u8> {
        match self {
            Record::A(IpAddr::V4(ip)) => ip.octets().to_vec(),
            Record::A(IpAddr::V6(ip)) => ip.octets().to_vec(),
            Record::Txt(text) => {
                let mut out = Vec::new();
                for chunk in text.as_bytes().chunks(255) {
                    out.push(chunk.len() as u8);
                    out.extend_from_slice(chunk);
                }
                out
            }
            Record::Mx(preference, host) => {
                let mut out = preference.to_be_bytes().to_vec();
                out.extend(name(host));
                out
            }
            Record::Ptr(host) => name(host),
        }
    }
}

fn name(host: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in host.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

/// Serves `zone` (owner name → records) until the process ends; returns its address.
pub fn serve(zone: Vec<(&str, Record)>) -> SocketAddr {
    let mut records: HashMap<String, Vec<Record>> = HashMap::new();
    for (owner, record) in zone {
        records.entry(owner.trim_end_matches('.').to_ascii_lowercase()).or_default().push(record);
    }
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let address = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 1500];
        while let Ok((n, peer)) = socket.recv_from(&mut buffer) {
            if let Some(answer) = answer(&buffer[..n], &records) {
                let _ = socket.send_to(&answer, peer);
            }
        }
    });
    address
}

fn answer(query: &[u8], records: &HashMap<String, Vec<Record>>) -> Option<Vec<u8>> {
    // The question: labels from byte 12, then type and class.
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = *query.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + len)?).to_ascii_lowercase());
        at += len;
    }
    let kind = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    let question_end = at + 4;
    let owner = labels.join(".");
    let found = records.get(&owner);
    let matching: Vec<&Record> = found.map(|all| all.iter().filter(|r| r.kind() == kind).collect()).unwrap_or_default();
    let mut out = Vec::new();
    out.extend_from_slice(&query[0..2]); // the id
    let rcode = if found.is_none() { 3 } else { 0 };
    out.extend_from_slice(&[0x81 | (query[2] & 0x01), 0x80 | rcode]); // response, RD copied, RA
    out.extend_from_slice(&[0, 1]);
    out.extend_from_slice(&(matching.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&query[12..question_end]);
    for record in matching {
        out.extend_from_slice(&[0xc0, 0x0c]); // the question's name
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&[0, 1, 0, 0, 0, 60]);
        let data = record.data();
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(&data);
    }
    Some(out)
}
