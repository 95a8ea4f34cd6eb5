use std::time::Instant;
fn main() {
    let client = redis::Client::open("redis://127.0.0.1:16399/0").unwrap();
    let mut con = client.get_connection().unwrap();
    let due = "s:due";
    let _: () = redis::cmd("DEL").arg(due).query(&mut con).unwrap();
    for b in 0..200u64 {
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(due);
        for i in 0..5000u64 {
            cmd.arg(1795400000000u64 + (b * 5000 + i) * 7)
                .arg(format!("order:{:010}", b * 5000 + i));
        }
        let _: () = cmd.query(&mut con).unwrap();
    }
    let script = redis::Script::new(
        "local r = redis.call('ZRANGE', KEYS[1], ARGV[1], ARGV[2], 'WITHSCORES') return table.concat(r, ' ')",
    );
    let t = Instant::now();
    let mut n = 0;
    for i in 0..20isize {
        let v: Vec<u8> = script
            .key(due)
            .arg(i * 50000)
            .arg(i * 50000 + 49999)
            .invoke(&mut con)
            .unwrap();
        n += v.split(|&b| b == b' ').count();
    }
    println!("lua: {:?} {}", t.elapsed(), n);
}
