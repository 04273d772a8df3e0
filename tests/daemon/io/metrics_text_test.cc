// The Prometheus text formatter (daemon/io/metrics_text.h): escaping,
// histogram buckets, and what RenderMetrics writes from a status report.
#include "daemon/io/metrics_text.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <limits>
#include <string>

namespace tally::io {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(MetricsTextTest, EscapesLabelValuesAndHelp) {
  EXPECT_EQ(MetricsWriter::EscapeLabelValue("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
  EXPECT_EQ(MetricsWriter::EscapeLabelValue("plain é"), "plain é");
  // Help escapes backslash and newline, not quotes.
  EXPECT_EQ(MetricsWriter::EscapeHelp("say \"x\\y\"\nz"), "say \"x\\\\y\"\\nz");

  MetricsWriter w;
  w.Family("tally_x_total", "counter", "line one\nline two");
  const Label labels[] = {{"rule", "we\"ird\\rule\n"}, {"name", ""}};
  w.Sample("tally_x_total", labels, uint64_t{7});
  EXPECT_EQ(w.text(),
            "# HELP tally_x_total line one\\nline two\n"
            "# TYPE tally_x_total counter\n"
            "tally_x_total{rule=\"we\\\"ird\\\\rule\\n\",name=\"\"} 7\n");
}

TEST(MetricsTextTest, FormatsSpecialValues) {
  EXPECT_EQ(MetricsWriter::FormatValue(0.25), "0.25");
  EXPECT_EQ(MetricsWriter::FormatValue(3), "3");
  EXPECT_EQ(MetricsWriter::FormatValue(std::numeric_limits<double>::quiet_NaN()), "NaN");
  EXPECT_EQ(MetricsWriter::FormatValue(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(MetricsWriter::FormatValue(-std::numeric_limits<double>::infinity()), "-Inf");
}

TEST(MetricsTextTest, HistogramBucketsAreCumulativeWithSumAndCount) {
  LatencyHistogram h;
  h.Observe(5'000);          // <= 10 us
  h.Observe(10'000);         // le is inclusive: still the first bucket
  h.Observe(30'000);         // <= 50 us
  h.Observe(2'000'000'000);  // above every bound: +Inf only
  const HistogramSnapshot s = h.Snapshot();
  EXPECT_EQ(s.counts[0], 2u);
  EXPECT_EQ(s.counts[2], 1u);
  EXPECT_EQ(s.counts[kLatencyBuckets - 1], 1u);

  MetricsWriter w;
  const Label labels[] = {{"door", "udp"}};
  w.Histogram("tally_d_seconds", labels, s);
  const std::string& t = w.text();
  EXPECT_THAT(t, HasSubstr("tally_d_seconds_bucket{door=\"udp\",le=\"1e-05\"} 2\n"));
  EXPECT_THAT(t, HasSubstr("tally_d_seconds_bucket{door=\"udp\",le=\"2.5e-05\"} 2\n"));
  EXPECT_THAT(t, HasSubstr("tally_d_seconds_bucket{door=\"udp\",le=\"5e-05\"} 3\n"));
  EXPECT_THAT(t, HasSubstr("tally_d_seconds_bucket{door=\"udp\",le=\"1\"} 3\n"));
  EXPECT_THAT(t, HasSubstr("tally_d_seconds_bucket{door=\"udp\",le=\"+Inf\"} 4\n"));
  EXPECT_THAT(t, HasSubstr("tally_d_seconds_count{door=\"udp\"} 4\n"));
  EXPECT_THAT(t, HasSubstr("tally_d_seconds_sum{door=\"udp\"} 2.000045\n"));
  // Buckets never decrease, in the order written.
  uint64_t last = 0;
  size_t pos = 0, buckets = 0;
  while ((pos = t.find("_bucket{", pos)) != std::string::npos) {
    const size_t space = t.find("} ", pos);
    const uint64_t v = std::stoull(t.substr(space + 2));
    EXPECT_GE(v, last);
    last = v;
    ++buckets;
    ++pos;
  }
  EXPECT_EQ(buckets, kLatencyBuckets);
}

TEST(MetricsTextTest, DoorMetricsCountResultsByDecision) {
  DoorMetrics m;
  CheckResult allowed, denied, invalid, over;
  allowed.allowed = true;
  invalid.status = Status::kInvalidArgument;
  over.status = Status::kOverCapacity;
  const CheckResult results[] = {allowed, allowed, denied, invalid, over};
  m.CountResults(Door::kUnix, results);
  m.Count(Door::kGrpc, Decision::kShadow, 3);
  const DoorMetricsSnapshot s = m.Snapshot();
  const auto unix_door = static_cast<size_t>(Door::kUnix);
  EXPECT_EQ(s.checks[unix_door][static_cast<size_t>(Decision::kAllowed)], 2u);
  EXPECT_EQ(s.checks[unix_door][static_cast<size_t>(Decision::kDenied)], 1u);
  EXPECT_EQ(s.checks[unix_door][static_cast<size_t>(Decision::kInvalid)], 1u);
  EXPECT_EQ(s.checks[unix_door][static_cast<size_t>(Decision::kOverCapacity)], 1u);
  EXPECT_EQ(s.checks[static_cast<size_t>(Door::kGrpc)][static_cast<size_t>(Decision::kShadow)], 3u);
  EXPECT_EQ(s.checks[static_cast<size_t>(Door::kUdp)][static_cast<size_t>(Decision::kAllowed)], 0u);
}

wire::StatusReport ClusterStatus() {
  wire::StatusReport s;
  s.node_id = "n1";
  s.cluster = true;
  s.owning = false;
  s.key_share = 0.5;
  s.live_keys = 42;
  auto member = [&s](const char* id, const char* state, double offset_ms) {
    wire::MemberReport& m = s.members.emplace_back();
    m.id = id;
    m.state = state;
    m.clock_offset_ms = offset_ms;
  };
  member("n1", "alive", std::numeric_limits<double>::quiet_NaN());
  member("n\"2", "alive", 12.5);
  member("n3", "suspect", -3);
  member("n4", "dead", std::numeric_limits<double>::quiet_NaN());
  // n3 has not told its rules yet; n4 runs others but is dead.
  const std::string digest(32, 'a');
  s.members[0].rules_digest = s.members[1].rules_digest = digest;
  s.members[3].rules_digest = std::string(32, 'b');
  s.counters = {{"allowed", 10},
                {"denied", 2},
                {"dedup_hits", 4},
                {"forwarded", 7},
                {"forward_timeouts", 1},
                {"forward_rtt_samples", 6},
                {"gossip_bytes_in", 100},
                {"gossip_bytes_out", 90},
                {"rejected_peer_state_future", 3},
                {"peer_sent_messages_forward", 7},
                {"peer_received_bytes_replicate_ack", 640},
                {"replicate_bytes_sent", 4096},
                {"replicate_acks", 4},
                {"replicate_ack_us_total", 2500},
                {"replicates_unacked", 1},
                {"anti_entropy_repairs", 12},
                {"anti_entropy_paused_full", 3},
                {"key_table_full", 1},
                {"seeds_unanswered", 0},
                {"swim_suspicions_raised", 5},
                {"swim_deaths_declared", 2},
                {"swim_dead_revived", 1},
                {"wall_steps", 4},
                {"swim_own_stalls", 6}};
  return s;
}

TEST(MetricsTextTest, RendersClusterStatus) {
  MetricsInput in;
  in.status = ClusterStatus();
  in.key_capacity = 1000;
  const std::string t = RenderMetrics(in);
  EXPECT_THAT(t, HasSubstr("tally_node_info{node_id=\"n1\",mode=\"cluster\"} 1\n"));
  EXPECT_THAT(t, HasSubstr("tally_cluster_members{state=\"alive\"} 2\n"));
  EXPECT_THAT(t, HasSubstr("tally_cluster_members{state=\"suspect\"} 1\n"));
  EXPECT_THAT(t, HasSubstr("tally_cluster_members{state=\"dead\"} 1\n"));
  EXPECT_THAT(t, HasSubstr("tally_cluster_members{state=\"left\"} 0\n"));
  EXPECT_THAT(t, HasSubstr("tally_cluster_members_rules_differ 1\n"));
  EXPECT_THAT(t, HasSubstr("tally_cluster_owning 0\n"));
  EXPECT_THAT(t, HasSubstr("tally_cluster_key_share 0.5\n"));
  EXPECT_THAT(t, HasSubstr("tally_cluster_member_clock_offset_seconds{peer=\"n\\\"2\"} 0.0125\n"));
  EXPECT_THAT(t, HasSubstr("tally_cluster_member_clock_offset_seconds{peer=\"n3\"} -0.003\n"));
  // No sample for unknown offsets, nor for ourselves.
  EXPECT_THAT(t, Not(HasSubstr("clock_offset_seconds{peer=\"n4\"}")));
  EXPECT_THAT(t, Not(HasSubstr("clock_offset_seconds{peer=\"n1\"}")));
  EXPECT_THAT(t, HasSubstr("tally_cluster_forwards_total 7\n"));
  EXPECT_THAT(t, HasSubstr("tally_cluster_forward_timeouts_total 1\n"));
  EXPECT_THAT(t, HasSubstr("tally_cluster_suspicions_raised_total 5\n"));
  EXPECT_THAT(t, HasSubstr("tally_cluster_deaths_declared_total 2\n"));
  EXPECT_THAT(t, HasSubstr("tally_cluster_false_deaths_total 1\n"));
  EXPECT_THAT(t, HasSubstr("tally_cluster_wall_clock_steps_total 4\n"));
  EXPECT_THAT(t, HasSubstr("tally_cluster_own_stalls_total 6\n"));
  EXPECT_THAT(t, HasSubstr("tally_cluster_gossip_bytes_total{direction=\"in\"} 100\n"));
  EXPECT_THAT(t, HasSubstr("tally_cluster_gossip_bytes_total{direction=\"out\"} 90\n"));
  EXPECT_THAT(t, HasSubstr("tally_cluster_rejected_peer_state_total{reason=\"future\"} 3\n"));
  EXPECT_THAT(t, HasSubstr("tally_cluster_peer_messages_by_kind_total{direction=\"out\","
                           "kind=\"forward\"} 7\n"));
  EXPECT_THAT(t, HasSubstr("tally_cluster_peer_bytes_by_kind_total{direction=\"in\","
                           "kind=\"replicate_ack\"} 640\n"));
  EXPECT_THAT(t, HasSubstr("tally_cluster_replication_bytes_sent_total 4096\n"));
  EXPECT_THAT(t, HasSubstr("# TYPE tally_cluster_replication_ack_delay_seconds summary\n"));
  EXPECT_THAT(t, HasSubstr("tally_cluster_replication_ack_delay_seconds_sum 0.0025\n"));
  EXPECT_THAT(t, HasSubstr("tally_cluster_replication_ack_delay_seconds_count 4\n"));
  EXPECT_THAT(t, HasSubstr("tally_cluster_replicates_unacked 1\n"));
  EXPECT_THAT(t, HasSubstr("tally_cluster_anti_entropy_repairs_total 12\n"));
  EXPECT_THAT(t, HasSubstr("tally_cluster_anti_entropy_paused_full_total 3\n"));
  EXPECT_THAT(t, HasSubstr("tally_cluster_forward_rtt_samples_total 6\n"));
  EXPECT_THAT(t, HasSubstr("# TYPE tally_cluster_key_table_full gauge\n"));
  EXPECT_THAT(t, HasSubstr("tally_cluster_key_table_full 1\n"));
  EXPECT_THAT(t, HasSubstr("tally_limiter_decisions_total{decision=\"allowed\"} 10\n"));
  EXPECT_THAT(t, HasSubstr("tally_dedup_hits_total 4\n"));
  EXPECT_THAT(t, HasSubstr("tally_live_keys 42\n"));
  EXPECT_THAT(t, HasSubstr("tally_key_capacity 1000\n"));
  // Every door x decision is present (zeros included), so rates work from the start.
  EXPECT_THAT(t,
              HasSubstr("tally_checks_total{door=\"seqpacket\",decision=\"over_capacity\"} 0\n"));
  // Each family is announced once, before its samples.
  size_t pos = 0;
  while ((pos = t.find("# TYPE ", pos)) != std::string::npos) {
    const size_t end = t.find(' ', pos + 7);
    const std::string name = t.substr(pos + 7, end - pos - 7);
    EXPECT_EQ(t.find("# TYPE " + name + " ", end), std::string::npos) << name;
    ++pos;
  }
}

TEST(MetricsTextTest, SingleNodeHasNoClusterFamilies) {
  MetricsInput in;
  in.status.node_id = "solo";
  in.rules.emplace();
  in.rules->rules.push_back({"edge.tier_gold", "burst", 5, 1, 2, 0});
  const std::string t = RenderMetrics(in);
  EXPECT_THAT(t, Not(HasSubstr("tally_cluster_")));
  EXPECT_THAT(t, HasSubstr("tally_rule_hits_total{rule=\"edge.tier_gold\",name=\"burst\"} 5\n"));
  EXPECT_THAT(
      t, HasSubstr("tally_rule_over_limit_hits_total{rule=\"edge.tier_gold\",name=\"burst\"} 1\n"));
  EXPECT_THAT(
      t, HasSubstr("tally_rule_near_limit_hits_total{rule=\"edge.tier_gold\",name=\"burst\"} 2\n"));
  EXPECT_THAT(t, HasSubstr("tally_rules_last_reload_success 1\n"));
}

TEST(MetricsTextTest, RendersLimitOverrides) {
  MetricsInput in;
  in.status.node_id = "n1";
  in.status.counters = {{"overrides_live", 3},    {"overrides_held", 5},
                        {"overrides_written", 2}, {"overrides_sent", 4},
                        {"overrides_applied", 6}, {"overrides_stale", 1},
                        {"overrides_refused", 7}, {"overrides_used", 9}};
  const std::string t = RenderMetrics(in);
  EXPECT_THAT(t, HasSubstr("# TYPE tally_limit_overrides gauge\n"));
  EXPECT_THAT(t, HasSubstr("tally_limit_overrides{state=\"live\"} 3\n"));
  EXPECT_THAT(t, HasSubstr("tally_limit_overrides{state=\"held\"} 5\n"));
  EXPECT_THAT(t, HasSubstr("# TYPE tally_limit_override_writes_total counter\n"));
  EXPECT_THAT(t, HasSubstr("tally_limit_override_writes_total{result=\"written\"} 2\n"));
  EXPECT_THAT(t, HasSubstr("tally_limit_override_writes_total{result=\"sent\"} 4\n"));
  EXPECT_THAT(t, HasSubstr("tally_limit_override_writes_total{result=\"applied\"} 6\n"));
  EXPECT_THAT(t, HasSubstr("tally_limit_override_writes_total{result=\"stale\"} 1\n"));
  EXPECT_THAT(t, HasSubstr("tally_limit_override_writes_total{result=\"refused\"} 7\n"));
  EXPECT_THAT(t, HasSubstr("tally_limit_override_checks_total 9\n"));
  // A daemon without overrides (echo mode) has none of these families.
  in.status.counters.clear();
  EXPECT_THAT(RenderMetrics(in), Not(HasSubstr("tally_limit_override")));
}

TEST(MetricsTextTest, AcceptsShortOfDescriptorsByDoor) {
  MetricsInput in;
  in.status.node_id = "solo";
  in.status.counters = {{"accept_fd_exhausted_seqpacket", 3},
                        {"accept_fd_exhausted_peer", 0},
                        {"accept_fd_exhausted_http", 7}};
  const std::string t = RenderMetrics(in);
  EXPECT_THAT(t, HasSubstr("# TYPE tally_accept_fd_exhausted_total counter\n"));
  EXPECT_THAT(t, HasSubstr("tally_accept_fd_exhausted_total{door=\"seqpacket\"} 3\n"));
  EXPECT_THAT(t, HasSubstr("tally_accept_fd_exhausted_total{door=\"peer\"} 0\n"));
  EXPECT_THAT(t, HasSubstr("tally_accept_fd_exhausted_total{door=\"http\"} 7\n"));
}

TEST(MetricsTextTest, ReadsProcessStats) {
  const std::optional<ProcessStats> p = ReadProcessStats();
  ASSERT_TRUE(p.has_value());
  EXPECT_GT(p->resident_memory_bytes, 0u);
  EXPECT_GE(p->open_fds, 3u);  // stdin, stdout, stderr at least
  EXPECT_GT(p->start_time_seconds, 1.6e9);
}

}  // namespace
}  // namespace tally::io
