//! The geo commands against a real `redis-server` 7.0: GEOADD's options
//! and errors, GEOPOS (RESP2 and RESP3), GEODIST in every unit, GEOHASH,
//! and GEOSEARCH / GEOSEARCHSTORE / GEORADIUS / GEORADIUSBYMEMBER by
//! radius and box, sorted, counted and stored, over random points spread
//! over the chunks of a small-chunked database, including near the poles
//! and the antimeridian.

use monotable_tests::assert_same_line as same;
use monotable_tests::Twin;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[test]
fn geo_commands_match_redis() {
    let twin = Twin::small_chunked();
    let (mut r, mut m) = twin.connect(30);
    let fixed = [
        "GEOADD Sicily 13.361389 38.115556 Palermo 15.087269 37.502669 Catania",
        "GEOADD Sicily NX 13.361389 38.115556 Palermo 12.758489 38.788135 edge1",
        "GEOADD Sicily XX CH 13.5 38.1 Palermo 1 1 nope",
        "GEOADD Sicily NX XX 1 1 a",
        "GEOADD Sicily 1 1",
        "GEOADD Sicily 181 1 a",
        "GEOADD Sicily 1 86 a",
        "GEOADD Sicily x 1 a",
        "GEOPOS Sicily Palermo Catania nosuch",
        "GEOPOS nokey a b",
        "GEODIST Sicily Palermo Catania",
        "GEODIST Sicily Palermo Catania km",
        "GEODIST Sicily Palermo Catania mi",
        "GEODIST Sicily Palermo Catania ft",
        "GEODIST Sicily Palermo Catania parsec",
        "GEODIST Sicily Palermo nosuch",
        "GEODIST Sicily Palermo Catania km extra",
        "GEOHASH Sicily Palermo Catania nosuch",
        "GEOHASH nokey a",
        "GEOSEARCH Sicily FROMLONLAT 15 37 BYRADIUS 200 km ASC",
        "GEOSEARCH Sicily FROMLONLAT 15 37 BYRADIUS 200 km DESC WITHCOORD WITHDIST WITHHASH",
        "GEOSEARCH Sicily FROMMEMBER Palermo BYBOX 400 400 km ASC WITHDIST",
        "GEOSEARCH Sicily FROMMEMBER nosuch BYRADIUS 10 km",
        "GEOSEARCH Sicily FROMLONLAT 15 37 BYRADIUS 200 km COUNT 1",
        "GEOSEARCH Sicily FROMLONLAT 15 37 BYRADIUS 200 km COUNT 0",
        "GEOSEARCH Sicily FROMLONLAT 15 37 BYRADIUS 200 km ANY",
        "GEOSEARCH Sicily FROMLONLAT 15 37 BYRADIUS -1 km",
        "GEOSEARCH Sicily FROMLONLAT 15 37",
        "GEOSEARCH Sicily BYRADIUS 10 km",
        "GEOSEARCH Sicily FROMLONLAT 15 37 FROMMEMBER Palermo BYRADIUS 10 km",
        "GEOSEARCH Sicily FROMLONLAT 15 37 BYBOX 1 -1 km",
        "GEOSEARCH Sicily FROMLONLAT 15 37 BYRADIUS 10 lightyears",
        "GEOSEARCH nokey FROMLONLAT 15 37 BYRADIUS 10 km",
        "GEOSEARCHSTORE dst Sicily FROMLONLAT 15 37 BYRADIUS 200 km STOREDIST",
        "ZRANGE dst 0 -1 WITHSCORES",
        "GEOSEARCHSTORE dst Sicily FROMLONLAT 15 37 BYRADIUS 200 km WITHDIST",
        "GEOSEARCHSTORE dst Sicily FROMLONLAT 0 0 BYRADIUS 1 km",
        "EXISTS dst",
        "GEORADIUS Sicily 15 37 200 km WITHDIST ASC",
        "GEORADIUS Sicily 15 37 200 km STORE dst2",
        "ZRANGE dst2 0 -1 WITHSCORES",
        "GEORADIUS Sicily 15 37 200 km STOREDIST dst3 COUNT 1",
        "ZRANGE dst3 0 -1 WITHSCORES",
        "GEORADIUS_RO Sicily 15 37 200 km STORE dst4",
        "GEORADIUSBYMEMBER Sicily Palermo 100 km ASC",
        "GEORADIUSBYMEMBER Sicily nosuch 100 km",
        "GEORADIUSBYMEMBER nokey nosuch 100 km",
        "GEORADIUSBYMEMBER_RO Sicily Catania 300 km DESC WITHCOORD",
        "SET str x",
        "GEOADD str 1 1 a",
        "GEOPOS str a",
        "GEOSEARCH str FROMLONLAT 1 1 BYRADIUS 1 km",
    ];
    for line in fixed {
        same(&mut r, &mut m, line);
    }
    for conn in [&mut r, &mut m] {
        conn.call(&[b"HELLO", b"3"]);
    }
    same(&mut r, &mut m, "GEOPOS Sicily Palermo nosuch");
    // A script sees RESP3 coordinates as doubles, not as frames.
    // Postmortem: it got the bytes ",13.36...\r\n".
    same(&mut r, &mut m, "EVAL redis.setresp(3);return(redis.call('geopos','Sicily','Palermo')) 0");
    same(&mut r, &mut m, "GEOSEARCH Sicily FROMLONLAT 15 37 BYRADIUS 200 km ASC WITHCOORD");
    for conn in [&mut r, &mut m] {
        conn.call(&[b"HELLO", b"2"]);
    }

    // Random points, some near the poles' limits and the antimeridian.
    let mut rng = StdRng::seed_from_u64(0x6e0);
    for batch in 0..8 {
        let mut line = "GEOADD pts".to_owned();
        for i in 0..150 {
            let (x, y) = match rng.gen_range(0..4) {
                0 => (rng.gen_range(179.0..180.0), rng.gen_range(-5.0..5.0)),
                1 => (rng.gen_range(-180.0..180.0), rng.gen_range(80.0..85.05)),
                _ => (rng.gen_range(-10.0..10.0), rng.gen_range(40.0..50.0)),
            };
            line += &format!(" {x:.6} {y:.6} p{batch}_{i}");
        }
        same(&mut r, &mut m, &line);
    }
    for _ in 0..80 {
        let (x, y) = (rng.gen_range(-12.0..12.0), rng.gen_range(38.0..52.0));
        let shape = if rng.gen_bool(0.5) {
            format!("BYRADIUS {} km", rng.gen_range(1..900))
        } else {
            format!("BYBOX {} {} km", rng.gen_range(1..1500), rng.gen_range(1..1500))
        };
        let order = ["ASC", "DESC"][rng.gen_range(0..2)];
        let count = if rng.gen_bool(0.3) {
            format!(" COUNT {}", rng.gen_range(1..20))
        } else {
            String::new()
        };
        same(
            &mut r,
            &mut m,
            &format!("GEOSEARCH pts FROMLONLAT {x:.4} {y:.4} {shape} {order}{count} WITHDIST"),
        );
    }
    same(&mut r, &mut m, "GEOSEARCH pts FROMLONLAT 179.5 0 BYRADIUS 300 km ASC WITHDIST");
    same(&mut r, &mut m, "GEOSEARCH pts FROMLONLAT 0 84 BYRADIUS 500 km ASC WITHDIST");
    same(&mut r, &mut m, "GEOSEARCH pts FROMLONLAT 0 0 BYRADIUS 20000 km ASC COUNT 5");
}
