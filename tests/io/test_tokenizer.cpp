// The SentencePiece tokenizer: built only with LCKV_HAVE_SENTENCEPIECE. A tiny
// model is trained in a temp dir, so no tokenizer file is committed.

#include <doctest/doctest.h>

#include <sentencepiece_trainer.h>

#include "io_test_util.hpp"
#include "lckv/io/checkpoint.hpp"
#include "lckv/io/tokenizer.hpp"

using namespace lckv;
using lckv::test::check_throws;
using lckv::test::TempDir;

namespace {

/// Trains a BPE tokenizer of `vocab` pieces into dir/tokenizer.model.
void train_tokenizer(const TempDir& dir, int vocab) {
  std::string text;
  const char* words[] = {"layer", "condensed", "cache", "attention", "token", "model", "query", "key", "value", "the", "of"};
  for (int i = 0; i < 400; ++i) text += std::string(words[i % 11]) + " " + words[(i * 7) % 11] + " " + words[(i * 3) % 11] + ".\n";
  lckv::test::write_file(dir / "corpus.txt", text);
  const auto status = sentencepiece::SentencePieceTrainer::Train(
      {{"input", (dir / "corpus.txt").string()}, {"model_prefix", (dir / "tokenizer").string()},
       {"vocab_size", std::to_string(vocab)}, {"model_type", "bpe"}, {"minloglevel", "2"}, {"bos_id", "1"},
       {"eos_id", "2"}, {"unk_id", "0"}});
  REQUIRE_MESSAGE(status.ok(), status.ToString());
}

}  // namespace

TEST_CASE("tokenizer: encode/decode round trip, BOS, vocabulary size checked against the model") {
  static_assert(kHaveTokenizer);
  TempDir dir;
  train_tokenizer(dir, 60);
  Tokenizer tok(dir / "tokenizer.model", 60);
  CHECK(tok.vocab_size() == 60);
  CHECK(tok.bos_id() == 1);
  CHECK(tok.eos_id() == 2);
  const auto ids = tok.encode("the condensed cache of the model");
  REQUIRE(ids.size() >= 3);
  CHECK(ids[0] == 1);
  CHECK(tok.encode("the key", false)[0] != 1);
  CHECK(tok.decode(ids) == "the condensed cache of the model");
  check_throws<InvalidArgument>([&] { (void)tok.decode({3, 60}); }, {"id 60", "[0, 60)"});

  check_throws<CheckpointError>([&] { Tokenizer t(dir / "tokenizer.model", 32000); },
                                {"tokenizer.model", "60 pieces", "vocab_size = 32000"});
  lckv::test::write_file(dir / "bad.model", "this is not a protobuf");
  check_throws<FormatError>([&] { Tokenizer t(dir / "bad.model"); }, {"bad.model", "not a SentencePiece model"});

  // A model directory finds its tokenizer.
  CHECK(find_tokenizer_model(dir.path()) == dir / "tokenizer.model");
}
