/*
 * list.h - every C unit test, one TEST(name) line each; name is the
 * function test_<name> defined in tests/unit/test_<file>.c.
 */
TEST(buf_escape)
TEST(error_conditions)
TEST(scram_rfc5802)
TEST(scram_rfc7677)
TEST(scram_wrong_proof)
TEST(scram_channel_binding)
TEST(scram_downgrade)
TEST(scram_malformed_first)
TEST(scram_authzid)
TEST(scram_malformed_final)
TEST(scram_order)
TEST(scram_derive_verify)
TEST(scram_fake_keys)
TEST(scram_base64)
TEST(scram_saslprep)
