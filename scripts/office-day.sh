#!/usr/bin/env bash
# An office's day, offline, through the real `keqing` binary: a consultation
# call, the 3-day follow-up of a non-visitor, a visit, a purchase, the
# follow-up cadence, and the daily summary. Leaves the replica in ./office-day.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p keqing
K="./target/release/keqing --data office-day"
rm -rf office-day
$K init --office 44 --device 前台1
$K staff add --name 李娜 --role consultant
$K staff add --name 王医生 --role expert
$K staff add --name 赵敏 --role followup
echo "== 11-20 电话咨询"
ID=$($K call --phone 138-0013-8000 --name 张三 --age 62 --sex 男 --disease 冠心病 --source 电视 \
    --staff 李娜 --relation 本人 --knows 是 --condition 胸闷气短 --at 2026-11-20T09:30 | tail -1)
$K call --phone 13900139000 --name 李四 --age 70 --disease 高血压 --source 报纸 --staff 李娜 --at 2026-11-20T10:15 >/dev/null
echo "== 11-21 回访清单"; $K due --date 2026-11-21
$K followup --patient "$ID" --staff 赵敏 --outcome 约好周一到堂 --next 带病历 --at 2026-11-22T09:00 >/dev/null
echo "== 11-24 到堂, 购药"
$K visit --patient 13800138000 --staff 王医生 --bought --at 2026-11-24T10:00 >/dev/null
$K purchase --patient 13800138000 --staff 王医生 --product 金诃心脑康 --quantity 3 --amount 1284 \
    --runout 2026-12-24 --gifts 血压计 --gift-receipt LP-0007 --at 2026-11-24T10:30 >/dev/null
echo "== 11-25 回访清单"; $K due --date 2026-11-25
$K followup --patient "$ID" --staff 赵敏 --outcome 服药正常 --at 2026-11-25T15:00 >/dev/null
echo "== 11-27 回访清单"; $K due --date 2026-11-27
echo "== 病历档案"; $K patient 13800138000
echo "== 电话咨询汇总表"; $K report daily --date 2026-11-20
$K report daily --date 2026-11-25
$K status
