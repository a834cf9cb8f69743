// The HellaSwag tasks llama-perplexity --hellaswag selects (seed 1, full validation file);
// kiln-eval's rng.rs test pick_matches_libstdcpp holds its output.
// g++ -O1 -o /tmp/pick scripts/hellaswag-pick.cpp && /tmp/pick
#include <random>
#include <vector>
#include <cstdio>
int main(){ std::mt19937 rng(1); std::vector<size_t> pool; for(size_t i=0;i<10042;i++) pool.push_back(i);
 for(int k=0;k<12;k++){ std::uniform_int_distribution<size_t> dist(0,pool.size()-1); size_t i=dist(rng); printf("%zu,", pool[i]); pool.erase(pool.begin()+i);} printf("\n");}
