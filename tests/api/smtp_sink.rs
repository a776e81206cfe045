//! A small SMTP server for tests: takes messages, or answers MAIL FROM with a chosen refusal.
//! It offers PIPELINING (so ownlist sends MAIL, RCPT and DATA in one write) and, like a real
//! server, refuses RCPT and DATA in a transaction whose MAIL was refused.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

pub struct SmtpSink {
    pub address: String,
    /// Every message taken, as its bytes (DATA, dot-unstuffed).
    pub messages: Arc<Mutex<Vec<String>>>,
    /// `None` takes messages; `Some("451 …")` answers MAIL FROM with that line.
    pub refusal: Arc<Mutex<Option<String>>>,
    /// The most mail transactions (MAIL FROM to the end of DATA) open at once.
    pub most_at_once: Arc<AtomicUsize>,
    /// Every MAIL FROM seen, taken or refused.
    pub mail_commands: Arc<AtomicUsize>,
    /// When each accepted MAIL FROM came.
    pub starts: Arc<Mutex<Vec<std::time::Instant>>>,
    /// MAIL FROM commands that arrived with their RCPT already behind them (pipelined).
    pub pipelined: Arc<AtomicUsize>,
    /// The envelope sender of every MAIL FROM seen.
    pub envelope_senders: Arc<Mutex<Vec<String>>>,
    /// Recipients refused at RCPT TO, with the line each is answered.
    pub refused_recipients: Arc<Mutex<Vec<(String, String)>>>,
}

impl SmtpSink {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let refusal: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let (taken, refusing) = (messages.clone(), refusal.clone());
        let most_at_once = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let most = most_at_once.clone();
        let mail_commands = Arc::new(AtomicUsize::new(0));
        let starts = Arc::new(Mutex::new(Vec::new()));
        let (mails, started) = (mail_commands.clone(), starts.clone());
        let pipelined = Arc::new(AtomicUsize::new(0));
        let ahead = pipelined.clone();
        let envelope_senders = Arc::new(Mutex::new(Vec::new()));
        let seen_senders = envelope_senders.clone();
        let refused_recipients: Arc<Mutex<Vec<(String, String)>>> = Arc::new(Mutex::new(Vec::new()));
        let refused = refused_recipients.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (taken, refusing) = (taken.clone(), refusing.clone());
                let (open, most) = (open.clone(), most.clone());
                let (mails, started, ahead) = (mails.clone(), started.clone(), ahead.clone());
                let seen_senders = seen_senders.clone();
                let refused = refused.clone();
                tokio::spawn(async move {
                    let (read, mut write) = socket.into_split();
                    let mut lines = BufReader::new(read).lines();
                    let _ = write.write_all(b"220 sink ESMTP\r\n").await;
                    // Where the current transaction is: MAIL taken, then RCPT taken.
                    let (mut in_mail, mut has_rcpt) = (false, false);
                    while let Ok(Some(line)) = lines.next_line().await {
                        let verb = line.split_whitespace().next().unwrap_or_default().to_ascii_uppercase();
                        let reply = match verb.as_str() {
                            "EHLO" => "250-sink\r\n250 PIPELINING".to_owned(),
                            "HELO" => "250 sink".to_owned(),
                            "MAIL" => {
                                let sender = line.split(['<', '>']).nth(1).unwrap_or_default().to_owned();
                                seen_senders.lock().unwrap().push(sender);
                                if lines.get_ref().buffer().starts_with(b"RCPT") {
                                    ahead.fetch_add(1, Ordering::SeqCst);
                                }
                                match (mails.fetch_add(1, Ordering::SeqCst), refusing.lock().unwrap().clone()).1 {
                                    Some(refusal) => refusal,
                                    None => {
                                        started.lock().unwrap().push(std::time::Instant::now());
                                        let now_open = open.fetch_add(1, Ordering::SeqCst) + 1;
                                        most.fetch_max(now_open, Ordering::SeqCst);
                                        in_mail = true;
                                        "250 OK".into()
                                    }
                                }
                            }
                            "RCPT" if !in_mail => "503 5.5.1 Error: need MAIL command".into(),
                            "RCPT" => {
                                let to = line.split(['<', '>']).nth(1).unwrap_or_default().to_ascii_lowercase();
                                let refusal = refused.lock().unwrap().iter().find(|(a, _)| *a == to).cloned();
                                match refusal {
                                    Some((_, reply)) => reply,
                                    None => {
                                        has_rcpt = true;
                                        "250 OK".into()
                                    }
                                }
                            }
                            "RSET" => {
                                if in_mail {
                                    open.fetch_sub(1, Ordering::SeqCst);
                                }
                                (in_mail, has_rcpt) = (false, false);
                                "250 OK".into()
                            }
                            "NOOP" => "250 OK".into(),
                            "DATA" if !has_rcpt => "503 5.5.1 Error: need RCPT command".into(),
                            "DATA" => {
                                (in_mail, has_rcpt) = (false, false);
                                let _ = write.write_all(b"354 go on\r\n").await;
                                let mut body = String::new();
                                let mut complete = false;
                                while let Ok(Some(line)) = lines.next_line().await {
                                    if line == "." {
                                        complete = true;
                                        break;
                                    }
                                    body.push_str(line.strip_prefix('.').unwrap_or(&line));
                                    body.push_str("\r\n");
                                }
                                if !complete {
                                    // The client went away mid-message: nothing was taken.
                                    open.fetch_sub(1, Ordering::SeqCst);
                                    return;
                                }
                                // A little latency, as a real relay has: lets concurrent sends overlap.
                                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                                open.fetch_sub(1, Ordering::SeqCst);
                                let mut taken = taken.lock().unwrap();
                                taken.push(body);
                                format!("250 2.0.0 queued as {}", taken.len())
                            }
                            "QUIT" => {
                                if in_mail {
                                    open.fetch_sub(1, Ordering::SeqCst);
                                }
                                let _ = write.write_all(b"221 bye\r\n").await;
                                return;
                            }
                            _ => "502 unknown command".into(),
                        };
                        if write.write_all(format!("{reply}\r\n").as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self {
            address,
            messages,
            refusal,
            most_at_once,
            mail_commands,
            starts,
            pipelined,
            envelope_senders,
            refused_recipients,
        }
    }

    /// Answers RCPT TO this address with `reply` (such as `550 5.1.1 no such user`).
    pub fn refuse_recipient(&self, address: &str, reply: &str) {
        self.refused_recipients.lock().unwrap().push((address.to_ascii_lowercase(), reply.to_owned()));
    }

    /// The envelope sender of every MAIL FROM seen, in order.
    pub fn senders(&self) -> Vec<String> {
        self.envelope_senders.lock().unwrap().clone()
    }

    pub fn url(&self) -> String {
        format!("smtp://{}", self.address)
    }

    pub fn refuse(&self, reply: Option<&str>) {
        *self.refusal.lock().unwrap() = reply.map(str::to_owned);
    }

    /// How many MAIL FROM commands came, taken or refused.
    pub fn attempts(&self) -> usize {
        self.mail_commands.load(Ordering::SeqCst)
    }

    pub fn taken(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }
}
