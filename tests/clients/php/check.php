<?php
// timewheel from PHP with phpredis (Debian: php-cli php-redis), through rawCommand.
// Run by tests/clients/main.rs (cargo test --test clients); by hand:
//   php tests/clients/php/check.php TIMEWHEEL_PORT REDIS_PORT STREAM
// Prints "ok" and exits 0 when every check passed.

function check(bool $ok, string $what): void {
    if (!$ok) {
        fwrite(STDERR, "FAILED: $what\n");
        exit(1);
    }
}

[$_, $twPort, $redisPort, $stream] = $argv;
$now = (int) (microtime(true) * 1000);

$tw = new Redis();
$tw->connect('127.0.0.1', (int) $twPort);

// ADD, PTTL, CANCEL: a deadline in Unix ms, the time left, cancelled.
$deadline = $tw->rawCommand('ADD', 'php:1', 60000);
check(is_int($deadline) && $deadline >= $now + 59000, "ADD replies the deadline: " . var_export($deadline, true));
$pttl = $tw->rawCommand('PTTL', 'php:1');
check($pttl > 0 && $pttl <= 60000, "PTTL: $pttl");
check($tw->rawCommand('CANCEL', 'php:1') === 1, 'CANCEL answers 1');
check($tw->rawCommand('CANCEL', 'php:1') === 0, 'a second CANCEL answers 0');

// A pipeline: commands sent together, replies in order.
$tw->pipeline();
$tw->rawCommand('ADD', 'php:p1', 60000);
$tw->rawCommand('ADD', 'php:p2', 60000);
$tw->rawCommand('CANCEL', 'php:p1');
$tw->rawCommand('COUNT');
$replies = $tw->exec();
check(count($replies) === 4 && is_int($replies[0]) && is_int($replies[1]), 'pipeline ADDs: ' . json_encode($replies));
check($replies[2] === 1 && $replies[3] === 1, 'pipeline CANCEL and COUNT: ' . json_encode($replies));

// A transaction: MULTI ... EXEC.
$tw->multi();
$tw->rawCommand('CANCEL', 'php:p2');
$tw->rawCommand('COUNT');
$replies = $tw->exec();
check($replies === [1, 0], 'MULTI/EXEC: ' . json_encode($replies));

// SUBSCRIBE fired on a connection of its own. phpredis' subscribe() blocks
// until the callback returns false, so the order is added first, due in one
// second: the subscription is in place long before it fires.
check(is_int($tw->rawCommand('ADD', 'php:fired', 1000)), 'ADD php:fired');
$sub = new Redis();
$sub->connect('127.0.0.1', (int) $twPort);
// phpredis 5.3 (Debian 12) leaves subscribe() only through an error, even
// when the callback returns false: a read timeout ends it here.
$sub->setOption(Redis::OPT_READ_TIMEOUT, 3);
$heard = null;
try {
    $sub->subscribe(['fired'], function ($redis, $channel, $message) use (&$heard) {
        $heard = $message;
    });
} catch (RedisException $e) {
    // the read timeout after the message
}
check($heard === 'php:fired', 'fired message: ' . var_export($heard, true));

// The stream consumer: read the journal's Redis Stream with a consumer group.
$redis = new Redis();
$redis->connect('127.0.0.1', (int) $redisPort);
try {
    $redis->xGroup('CREATE', $stream, 'shop', '0', true);
} catch (RedisException $e) {
    // the group exists already
}
$closed = null;
$end = microtime(true) + 20;
while ($closed === null && microtime(true) < $end) {
    $batch = $redis->xReadGroup('shop', 'php-worker', [$stream => '>'], 100, 1000);
    foreach ($batch ?: [] as $entries) {
        foreach ($entries as $entryId => $order) {
            if ($order['id'] === 'php:fired') {
                $closed = $order;
            }
            $redis->xAck($stream, 'shop', [$entryId]);
        }
    }
}
check($closed !== null && (int) $closed['deadline_ms'] > 0, 'php:fired read from the stream');
$pending = $redis->xPending($stream, 'shop');
check($pending[0] === 0, 'nothing left pending: ' . json_encode($pending));
echo "ok\n";
